# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vm_pin_global_optspecs
    string join \n json h/help V/version
end

function __fish_vm_pin_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vm_pin_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vm_pin_using_subcommand
    set -l cmd (__fish_vm_pin_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vm-pin -n "__fish_vm_pin_needs_command" -l json -d 'Print JSON even on a terminal'
complete -c vm-pin -n "__fish_vm_pin_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vm-pin -n "__fish_vm_pin_needs_command" -s V -l version -d 'Print version'
complete -c vm-pin -n "__fish_vm_pin_needs_command" -f -a "vcpu" -d 'Show or set vCPU affinity (virsh vcpupin)'
complete -c vm-pin -n "__fish_vm_pin_needs_command" -f -a "emulator" -d 'Show or set the emulator thread\'s affinity (virsh emulatorpin)'
complete -c vm-pin -n "__fish_vm_pin_needs_command" -f -a "iothread" -d 'Show or set iothread affinity (virsh iothreadpin)'
complete -c vm-pin -n "__fish_vm_pin_needs_command" -f -a "numa" -d 'Show or set the host NUMA policy of guest memory (virsh numatune)'
complete -c vm-pin -n "__fish_vm_pin_needs_command" -f -a "host" -d 'Host tuning from the guide: KVM halt polling, kworker CPUs'
complete -c vm-pin -n "__fish_vm_pin_needs_command" -f -a "sched" -d 'Show or set CPU shares and bandwidth (virsh schedinfo)'
complete -c vm-pin -n "__fish_vm_pin_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand vcpu" -l live -d 'Change the running VM\'s threads'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand vcpu" -l config -d 'Change the VM\'s definition (used at its next start)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand vcpu" -l json -d 'Print JSON even on a terminal'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand vcpu" -s h -l help -d 'Print help'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand emulator" -l live -d 'Change the running VM\'s threads'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand emulator" -l config -d 'Change the VM\'s definition (used at its next start)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand emulator" -l json -d 'Print JSON even on a terminal'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand emulator" -s h -l help -d 'Print help'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand iothread" -l live -d 'Change the running VM\'s threads'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand iothread" -l config -d 'Change the VM\'s definition (used at its next start)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand iothread" -l json -d 'Print JSON even on a terminal'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand iothread" -s h -l help -d 'Print help'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand numa" -l mode -d 'strict, preferred or interleave (at start; not live)' -r
complete -c vm-pin -n "__fish_vm_pin_using_subcommand numa" -l nodeset -d 'NUMA nodes, e.g. 0 or 0-1' -r
complete -c vm-pin -n "__fish_vm_pin_using_subcommand numa" -l live -d 'Change the running VM\'s threads'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand numa" -l config -d 'Change the VM\'s definition (used at its next start)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand numa" -l json -d 'Print JSON even on a terminal'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand numa" -s h -l help -d 'Print help'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and not __fish_seen_subcommand_from halt-poll kworker-mask help" -l json -d 'Print JSON even on a terminal'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and not __fish_seen_subcommand_from halt-poll kworker-mask help" -s h -l help -d 'Print help'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and not __fish_seen_subcommand_from halt-poll kworker-mask help" -f -a "halt-poll" -d 'Show or set /sys/module/kvm/parameters/halt_poll_ns'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and not __fish_seen_subcommand_from halt-poll kworker-mask help" -f -a "kworker-mask" -d 'Show or set the CPUs unbound kworkers may use (/sys/devices/virtual/workqueue/cpumask)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and not __fish_seen_subcommand_from halt-poll kworker-mask help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and __fish_seen_subcommand_from halt-poll" -l dry-run -d 'Print what would be written, change nothing'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and __fish_seen_subcommand_from halt-poll" -l json -d 'Print JSON even on a terminal'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and __fish_seen_subcommand_from halt-poll" -s h -l help -d 'Print help'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and __fish_seen_subcommand_from kworker-mask" -l dry-run
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and __fish_seen_subcommand_from kworker-mask" -l json -d 'Print JSON even on a terminal'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and __fish_seen_subcommand_from kworker-mask" -s h -l help -d 'Print help'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and __fish_seen_subcommand_from help" -f -a "halt-poll" -d 'Show or set /sys/module/kvm/parameters/halt_poll_ns'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and __fish_seen_subcommand_from help" -f -a "kworker-mask" -d 'Show or set the CPUs unbound kworkers may use (/sys/devices/virtual/workqueue/cpumask)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand host; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand sched" -l set -d 'cpu_shares=N,vcpu_period=US,vcpu_quota=US,emulator_period=US,emulator_quota=US' -r
complete -c vm-pin -n "__fish_vm_pin_using_subcommand sched" -l live -d 'Change the running VM\'s threads'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand sched" -l config -d 'Change the VM\'s definition (used at its next start)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand sched" -l json -d 'Print JSON even on a terminal'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand sched" -s h -l help -d 'Print help'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator iothread numa host sched help" -f -a "vcpu" -d 'Show or set vCPU affinity (virsh vcpupin)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator iothread numa host sched help" -f -a "emulator" -d 'Show or set the emulator thread\'s affinity (virsh emulatorpin)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator iothread numa host sched help" -f -a "iothread" -d 'Show or set iothread affinity (virsh iothreadpin)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator iothread numa host sched help" -f -a "numa" -d 'Show or set the host NUMA policy of guest memory (virsh numatune)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator iothread numa host sched help" -f -a "host" -d 'Host tuning from the guide: KVM halt polling, kworker CPUs'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator iothread numa host sched help" -f -a "sched" -d 'Show or set CPU shares and bandwidth (virsh schedinfo)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator iothread numa host sched help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and __fish_seen_subcommand_from host" -f -a "halt-poll" -d 'Show or set /sys/module/kvm/parameters/halt_poll_ns'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and __fish_seen_subcommand_from host" -f -a "kworker-mask" -d 'Show or set the CPUs unbound kworkers may use (/sys/devices/virtual/workqueue/cpumask)'
