# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vm_snap_global_optspecs
    string join \n h/help V/version
end

function __fish_vm_snap_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vm_snap_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vm_snap_using_subcommand
    set -l cmd (__fish_vm_snap_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vm-snap -n "__fish_vm_snap_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vm-snap -n "__fish_vm_snap_needs_command" -s V -l version -d 'Print version'
complete -c vm-snap -n "__fish_vm_snap_needs_command" -f -a "save" -d 'Save a running or paused VM into FILE and end it (virsh save)'
complete -c vm-snap -n "__fish_vm_snap_needs_command" -f -a "restore" -d 'Start a VM from a saved FILE (virsh restore); returns once it runs'
complete -c vm-snap -n "__fish_vm_snap_needs_command" -f -a "verify" -d 'Check a saved FILE whole: header, state and every page of memory'
complete -c vm-snap -n "__fish_vm_snap_needs_command" -f -a "create" -d 'Snapshot a VM\'s disks: a qcow2 overlay on each disk\'s top (virsh snapshot-create-as --disk-only --atomic), live or on a stopped, defined VM; all disks or none'
complete -c vm-snap -n "__fish_vm_snap_needs_command" -f -a "revert" -d 'Put a defined VM\'s disks back as they were at a snapshot (virsh snapshot-revert); later snapshots and later writes are discarded. A running VM is refused unless --force ends it first'
complete -c vm-snap -n "__fish_vm_snap_needs_command" -f -a "delete" -d 'Delete a disk snapshot (virsh snapshot-delete): its overlay is merged into its base (blockcommit) and leaves the chain, live or on a stopped, defined VM. The disk\'s content stays as it is'
complete -c vm-snap -n "__fish_vm_snap_needs_command" -f -a "list" -d 'List a VM\'s disk snapshots, oldest first (virsh snapshot-list)'
complete -c vm-snap -n "__fish_vm_snap_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand save" -l no-fsync -d 'Skip the fsync: faster, but a power loss soon after can leave FILE incomplete (the VM is gone by then)'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand save" -s h -l help -d 'Print help'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand restore" -l name -d 'Run under this name: another VM from the same file (an instant clone). Give it its own disks with --spec' -r
complete -c vm-snap -n "__fish_vm_snap_using_subcommand restore" -l spec -d 'A spec whose host-local parts (disk paths, console, taps, placement) replace the saved ones (virsh restore --xml); its devices, memory and vCPUs must match the saved machine\'s' -r
complete -c vm-snap -n "__fish_vm_snap_using_subcommand restore" -l console -d 'Serial console file (default: console.log in the VM\'s state folder)' -r -F
complete -c vm-snap -n "__fish_vm_snap_using_subcommand restore" -l disk -d 'Disk ID uses PATH (a clone\'s own overlay, say); the format stays the saved one unless given. Repeatable' -r
complete -c vm-snap -n "__fish_vm_snap_using_subcommand restore" -l nic -d 'NIC ID runs on this tap, or a new tap on this bridge (the guest keeps its MAC). Repeatable' -r
complete -c vm-snap -n "__fish_vm_snap_using_subcommand restore" -l paused -d 'Stay paused until `vm-run resume`'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand restore" -s h -l help -d 'Print help'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand verify" -s h -l help -d 'Print help'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand create" -l name -d 'The snapshot\'s name (default: the time, in seconds since 1970)' -r
complete -c vm-snap -n "__fish_vm_snap_using_subcommand create" -l disk -l diskspec -d 'A disk to snapshot, as ID[,file=PATH] (virsh\'s --diskspec, whose snapshot=external is accepted); default: every writable disk, each overlay beside its top as STEM.NAME.qcow2' -r
complete -c vm-snap -n "__fish_vm_snap_using_subcommand create" -l atomic -d 'Accepted for virsh\'s sake: every snapshot is atomic'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand create" -s h -l help -d 'Print help'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand revert" -l force -d 'End the VM first if it runs (virsh destroy): what its guest has not written to disk is lost'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand revert" -l running -d 'Boot the VM from its definition once its disks are back'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand revert" -l paused -d 'As --running, but the VM waits paused for `vm-run resume`'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand revert" -s h -l help -d 'Print help'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand delete" -s h -l help -d 'Print help'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand list" -s h -l help -d 'Print help'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand help; and not __fish_seen_subcommand_from save restore verify create revert delete list help" -f -a "save" -d 'Save a running or paused VM into FILE and end it (virsh save)'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand help; and not __fish_seen_subcommand_from save restore verify create revert delete list help" -f -a "restore" -d 'Start a VM from a saved FILE (virsh restore); returns once it runs'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand help; and not __fish_seen_subcommand_from save restore verify create revert delete list help" -f -a "verify" -d 'Check a saved FILE whole: header, state and every page of memory'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand help; and not __fish_seen_subcommand_from save restore verify create revert delete list help" -f -a "create" -d 'Snapshot a VM\'s disks: a qcow2 overlay on each disk\'s top (virsh snapshot-create-as --disk-only --atomic), live or on a stopped, defined VM; all disks or none'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand help; and not __fish_seen_subcommand_from save restore verify create revert delete list help" -f -a "revert" -d 'Put a defined VM\'s disks back as they were at a snapshot (virsh snapshot-revert); later snapshots and later writes are discarded. A running VM is refused unless --force ends it first'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand help; and not __fish_seen_subcommand_from save restore verify create revert delete list help" -f -a "delete" -d 'Delete a disk snapshot (virsh snapshot-delete): its overlay is merged into its base (blockcommit) and leaves the chain, live or on a stopped, defined VM. The disk\'s content stays as it is'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand help; and not __fish_seen_subcommand_from save restore verify create revert delete list help" -f -a "list" -d 'List a VM\'s disk snapshots, oldest first (virsh snapshot-list)'
complete -c vm-snap -n "__fish_vm_snap_using_subcommand help; and not __fish_seen_subcommand_from save restore verify create revert delete list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
