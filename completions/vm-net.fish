# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vm_net_global_optspecs
    string join \n json h/help V/version
end

function __fish_vm_net_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vm_net_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vm_net_using_subcommand
    set -l cmd (__fish_vm_net_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vm-net -n "__fish_vm_net_needs_command" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vm-net -n "__fish_vm_net_needs_command" -s V -l version -d 'Print version'
complete -c vm-net -n "__fish_vm_net_needs_command" -f -a "bridge" -d 'Linux bridges (brctl addbr / delbr / show / addif / delif)'
complete -c vm-net -n "__fish_vm_net_needs_command" -f -a "tap" -d 'Persistent TAP devices for VMs'
complete -c vm-net -n "__fish_vm_net_needs_command" -f -a "link" -d 'Set a link up or down (ip link set NAME up|down)'
complete -c vm-net -n "__fish_vm_net_needs_command" -f -a "addr" -d 'A bridge\'s own addresses (ip addr add|del ADDR/PREFIX dev NAME)'
complete -c vm-net -n "__fish_vm_net_needs_command" -f -a "mac" -d 'Print a MAC address for a NIC: random, or the same every time for a VM name and NIC index'
complete -c vm-net -n "__fish_vm_net_needs_command" -f -a "list" -d 'The links vm-net made (alias \'vmtools\')'
complete -c vm-net -n "__fish_vm_net_needs_command" -f -a "ovs" -d 'Open vSwitch bridges and ports, through ovs-vsctl'
complete -c vm-net -n "__fish_vm_net_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and not __fish_seen_subcommand_from add del list attach detach help" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and not __fish_seen_subcommand_from add del list attach detach help" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and not __fish_seen_subcommand_from add del list attach detach help" -f -a "add" -d 'Make a Linux bridge (down, like brctl addbr)'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and not __fish_seen_subcommand_from add del list attach detach help" -f -a "del" -d 'Remove a bridge'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and not __fish_seen_subcommand_from add del list attach detach help" -f -a "list" -d 'Bridges and their ports (brctl show)'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and not __fish_seen_subcommand_from add del list attach detach help" -f -a "attach" -d 'Make IFACE a port of BRIDGE (brctl addif)'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and not __fish_seen_subcommand_from add del list attach detach help" -f -a "detach" -d 'Take IFACE out of BRIDGE (brctl delif)'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and not __fish_seen_subcommand_from add del list attach detach help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from add" -l may-exist -d 'Succeed if a bridge of that name exists'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from add" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from del" -l if-exists -d 'Succeed if there is no such link'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from del" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from del" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from list" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from attach" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from attach" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from detach" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from detach" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from help" -f -a "add" -d 'Make a Linux bridge (down, like brctl addbr)'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from help" -f -a "del" -d 'Remove a bridge'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from help" -f -a "list" -d 'Bridges and their ports (brctl show)'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from help" -f -a "attach" -d 'Make IFACE a port of BRIDGE (brctl addif)'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from help" -f -a "detach" -d 'Take IFACE out of BRIDGE (brctl delif)'
complete -c vm-net -n "__fish_vm_net_using_subcommand bridge; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and not __fish_seen_subcommand_from add del help" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and not __fish_seen_subcommand_from add del help" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and not __fish_seen_subcommand_from add del help" -f -a "add" -d 'Make a persistent tap (with a virtio-net header, as VMs use it)'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and not __fish_seen_subcommand_from add del help" -f -a "del" -d 'Remove a tap'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and not __fish_seen_subcommand_from add del help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from add" -l bridge -d 'Attach it to this bridge' -r
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from add" -l owner -d 'The user that may open it (a VM running as that user)' -r
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from add" -l queues -d 'Queues (more than 1: a multiqueue tap)' -r
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from add" -l may-exist -d 'Succeed if a tap of that name exists'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from add" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from del" -l if-exists -d 'Succeed if there is no such link'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from del" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from del" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from help" -f -a "add" -d 'Make a persistent tap (with a virtio-net header, as VMs use it)'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from help" -f -a "del" -d 'Remove a tap'
complete -c vm-net -n "__fish_vm_net_using_subcommand tap; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-net -n "__fish_vm_net_using_subcommand link" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand link" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand addr" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand addr" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand mac" -l name -d 'The VM\'s name (with --index: a stable address)' -r
complete -c vm-net -n "__fish_vm_net_using_subcommand mac" -l index -d 'The NIC\'s index in the VM\'s spec' -r
complete -c vm-net -n "__fish_vm_net_using_subcommand mac" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand mac" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand list" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand list" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and not __fish_seen_subcommand_from bridge port help" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and not __fish_seen_subcommand_from bridge port help" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and not __fish_seen_subcommand_from bridge port help" -f -a "bridge" -d 'Open vSwitch bridges'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and not __fish_seen_subcommand_from bridge port help" -f -a "port" -d 'Ports of an Open vSwitch bridge'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and not __fish_seen_subcommand_from bridge port help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from bridge" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from bridge" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from bridge" -f -a "add" -d 'ovs-vsctl add-br'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from bridge" -f -a "del" -d 'ovs-vsctl del-br'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from bridge" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from port" -l json -d 'Print JSON even on a terminal'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from port" -s h -l help -d 'Print help'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from port" -f -a "add" -d 'ovs-vsctl add-port'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from port" -f -a "del" -d 'ovs-vsctl del-port'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from port" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from help" -f -a "bridge" -d 'Open vSwitch bridges'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from help" -f -a "port" -d 'Ports of an Open vSwitch bridge'
complete -c vm-net -n "__fish_vm_net_using_subcommand ovs; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and not __fish_seen_subcommand_from bridge tap link addr mac list ovs help" -f -a "bridge" -d 'Linux bridges (brctl addbr / delbr / show / addif / delif)'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and not __fish_seen_subcommand_from bridge tap link addr mac list ovs help" -f -a "tap" -d 'Persistent TAP devices for VMs'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and not __fish_seen_subcommand_from bridge tap link addr mac list ovs help" -f -a "link" -d 'Set a link up or down (ip link set NAME up|down)'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and not __fish_seen_subcommand_from bridge tap link addr mac list ovs help" -f -a "addr" -d 'A bridge\'s own addresses (ip addr add|del ADDR/PREFIX dev NAME)'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and not __fish_seen_subcommand_from bridge tap link addr mac list ovs help" -f -a "mac" -d 'Print a MAC address for a NIC: random, or the same every time for a VM name and NIC index'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and not __fish_seen_subcommand_from bridge tap link addr mac list ovs help" -f -a "list" -d 'The links vm-net made (alias \'vmtools\')'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and not __fish_seen_subcommand_from bridge tap link addr mac list ovs help" -f -a "ovs" -d 'Open vSwitch bridges and ports, through ovs-vsctl'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and not __fish_seen_subcommand_from bridge tap link addr mac list ovs help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and __fish_seen_subcommand_from bridge" -f -a "add" -d 'Make a Linux bridge (down, like brctl addbr)'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and __fish_seen_subcommand_from bridge" -f -a "del" -d 'Remove a bridge'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and __fish_seen_subcommand_from bridge" -f -a "list" -d 'Bridges and their ports (brctl show)'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and __fish_seen_subcommand_from bridge" -f -a "attach" -d 'Make IFACE a port of BRIDGE (brctl addif)'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and __fish_seen_subcommand_from bridge" -f -a "detach" -d 'Take IFACE out of BRIDGE (brctl delif)'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and __fish_seen_subcommand_from tap" -f -a "add" -d 'Make a persistent tap (with a virtio-net header, as VMs use it)'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and __fish_seen_subcommand_from tap" -f -a "del" -d 'Remove a tap'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and __fish_seen_subcommand_from ovs" -f -a "bridge" -d 'Open vSwitch bridges'
complete -c vm-net -n "__fish_vm_net_using_subcommand help; and __fish_seen_subcommand_from ovs" -f -a "port" -d 'Ports of an Open vSwitch bridge'
