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
complete -c vm-pin -n "__fish_vm_pin_using_subcommand sched" -l set -d 'cpu_shares=N,vcpu_period=US,vcpu_quota=US,emulator_period=US,emulator_quota=US' -r
complete -c vm-pin -n "__fish_vm_pin_using_subcommand sched" -l live -d 'Change the running VM\'s threads'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand sched" -l config -d 'Change the VM\'s definition (used at its next start)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand sched" -l json -d 'Print JSON even on a terminal'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand sched" -s h -l help -d 'Print help'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator sched help" -f -a "vcpu" -d 'Show or set vCPU affinity (virsh vcpupin)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator sched help" -f -a "emulator" -d 'Show or set the emulator thread\'s affinity (virsh emulatorpin)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator sched help" -f -a "sched" -d 'Show or set CPU shares and bandwidth (virsh schedinfo)'
complete -c vm-pin -n "__fish_vm_pin_using_subcommand help; and not __fish_seen_subcommand_from vcpu emulator sched help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
