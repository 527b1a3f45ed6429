# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vm_run_global_optspecs
    string join \n json h/help V/version
end

function __fish_vm_run_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vm_run_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vm_run_using_subcommand
    set -l cmd (__fish_vm_run_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vm-run -n "__fish_vm_run_needs_command" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vm-run -n "__fish_vm_run_needs_command" -s V -l version -d 'Print version'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "start" -d 'Start a VM from a spec file or a defined name'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "define" -d 'Store a spec as a defined VM (with absolute paths)'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "undefine" -d 'Remove a defined VM\'s definition'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "edit" -d 'Edit a defined VM\'s spec with $VISUAL or $EDITOR; saved only if valid'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "list" -d 'List running VMs (with --all, defined ones too)'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "status" -d 'Describe a VM (virsh dominfo)'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "state" -d 'Print a VM\'s state (virsh domstate)'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "pause" -d 'Pause every vCPU'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "resume" -d 'Resume a paused VM'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "shutdown" -d 'Ask the guest to power off and wait for it'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "kill" -d 'Stop a VM at once (virsh destroy)'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "reboot" -d 'Reset the guest'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "console" -d 'Attach to the VM\'s serial console (a pty or socket; Ctrl-] leaves), or follow its output (a file)'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "wait" -d 'Wait until the VM has stopped'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "stats" -d 'Print a running VM\'s disk and NIC counters (virsh domblkstat, domifstat)'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "disks" -d 'List a VM\'s disks (virsh domblklist)'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "ifaces" -d 'List a running VM\'s network interfaces (virsh domiflist)'
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "serve"
complete -c vm-run -n "__fish_vm_run_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -l restore -d 'Start from a saved VM (vm-snap save) instead of booting: the spec and the machine come from the file' -r -F
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -l incoming -d 'Start from a live migration\'s stream on this inherited descriptor (a connected socket; vm-migrate recv hands it over): the spec and the machine come from the source' -r
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -l incoming-listener -d 'With --incoming: a listening socket on this inherited descriptor, where the source\'s further streams connect when it sends over several (vm-migrate send --streams); each must show the hello\'s token, and any other connection is closed' -r
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -l name -d 'With --restore or --incoming: run under this name (an instant clone of a saved VM)' -r
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -l spec -d 'With --restore or --incoming: this spec replaces the saved one\'s host-local parts (disk paths, console, taps, placement); its devices, memory and vCPUs must match the saved machine\'s' -r
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -l disk -d 'With --restore or --incoming: disk ID uses PATH (a clone\'s own overlay, say); the format stays the saved one unless given. Repeatable' -r
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -l nic -d 'With --restore or --incoming: NIC ID runs on this tap, or a new tap on this bridge (the guest keeps its MAC). Repeatable' -r
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -l console -d 'Serial console file for a detached VM (default: console.log in its state folder)' -r -F
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -l paused -d 'Stay paused until `vm-run resume` (virsh start --paused): a booted guest runs no instruction before it, a restored or incoming one goes on from where it was'
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -s d -l detach -d 'Run in the background; print the VM\'s state once the guest runs'
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand start" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand define" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand define" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand undefine" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand undefine" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand edit" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand edit" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand list" -l all
complete -c vm-run -n "__fish_vm_run_using_subcommand list" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand list" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand status" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand status" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand state" -l reason -d 'Also print why it is in that state'
complete -c vm-run -n "__fish_vm_run_using_subcommand state" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand state" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand pause" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand pause" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand resume" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand resume" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand shutdown" -l mode -d 'How to ask: press the ACPI power button (acpi, virsh\'s default; Linux needs acpid or a desktop to act on it), or Ctrl-Alt-Del, whose answering reset counts as a power-off' -r -f -a "acpi\t''
ctrl-alt-del\t''"
complete -c vm-run -n "__fish_vm_run_using_subcommand shutdown" -l timeout -d 'Seconds to wait for the guest' -r
complete -c vm-run -n "__fish_vm_run_using_subcommand shutdown" -l force -d 'Kill the VM if the guest has not gone down in time'
complete -c vm-run -n "__fish_vm_run_using_subcommand shutdown" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand shutdown" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand kill" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand kill" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand reboot" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand reboot" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand console" -l until -d 'Return once the console has shown TEXT (exit 0), as a script waits for a prompt; exit 1 if the VM ends first. The output ends with TEXT. Input from stdin is sent first. A console file is searched from its start' -r
complete -c vm-run -n "__fish_vm_run_using_subcommand console" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand console" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand wait" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand wait" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand stats" -l disk -d 'Only this disk' -r
complete -c vm-run -n "__fish_vm_run_using_subcommand stats" -l iface -d 'Only this network interface (its id in the spec)' -r
complete -c vm-run -n "__fish_vm_run_using_subcommand stats" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand stats" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand disks" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand disks" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand ifaces" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand ifaces" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand serve" -l json -d 'Print JSON even on a terminal'
complete -c vm-run -n "__fish_vm_run_using_subcommand serve" -s h -l help -d 'Print help'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "start" -d 'Start a VM from a spec file or a defined name'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "define" -d 'Store a spec as a defined VM (with absolute paths)'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "undefine" -d 'Remove a defined VM\'s definition'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "edit" -d 'Edit a defined VM\'s spec with $VISUAL or $EDITOR; saved only if valid'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "list" -d 'List running VMs (with --all, defined ones too)'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "status" -d 'Describe a VM (virsh dominfo)'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "state" -d 'Print a VM\'s state (virsh domstate)'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "pause" -d 'Pause every vCPU'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "resume" -d 'Resume a paused VM'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "shutdown" -d 'Ask the guest to power off and wait for it'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "kill" -d 'Stop a VM at once (virsh destroy)'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "reboot" -d 'Reset the guest'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "console" -d 'Attach to the VM\'s serial console (a pty or socket; Ctrl-] leaves), or follow its output (a file)'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "wait" -d 'Wait until the VM has stopped'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "stats" -d 'Print a running VM\'s disk and NIC counters (virsh domblkstat, domifstat)'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "disks" -d 'List a VM\'s disks (virsh domblklist)'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "ifaces" -d 'List a running VM\'s network interfaces (virsh domiflist)'
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "serve"
complete -c vm-run -n "__fish_vm_run_using_subcommand help; and not __fish_seen_subcommand_from start define undefine edit list status state pause resume shutdown kill reboot console wait stats disks ifaces serve help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
