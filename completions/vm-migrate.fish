# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vm_migrate_global_optspecs
    string join \n h/help V/version
end

function __fish_vm_migrate_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vm_migrate_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vm_migrate_using_subcommand
    set -l cmd (__fish_vm_migrate_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vm-migrate -n "__fish_vm_migrate_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vm-migrate -n "__fish_vm_migrate_needs_command" -s V -l version -d 'Print version'
complete -c vm-migrate -n "__fish_vm_migrate_needs_command" -f -a "send" -d 'Send a running VM to a destination (virsh migrate --live)'
complete -c vm-migrate -n "__fish_vm_migrate_needs_command" -f -a "recv" -d 'Receive a VM: listen, then start it in vm-run once it has arrived whole; prints its state as `vm-run start --detach` does'
complete -c vm-migrate -n "__fish_vm_migrate_needs_command" -f -a "status" -d 'How a migration in progress is doing (virsh domjobinfo)'
complete -c vm-migrate -n "__fish_vm_migrate_needs_command" -f -a "cancel" -d 'Abandon a migration in progress; the VM runs on here (virsh domjobabort)'
complete -c vm-migrate -n "__fish_vm_migrate_needs_command" -f -a "set" -d 'Change the downtime budget or the bandwidth cap of a migration in progress (virsh migrate-setmaxdowntime, migrate-setspeed); prints its progress with the knobs as they now are. `status` shows them too (virsh migrate-getspeed)'
complete -c vm-migrate -n "__fish_vm_migrate_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand send" -l max-downtime -d 'The longest pause for the last copy, in ms (virsh migrate-setmaxdowntime)' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand send" -l bandwidth -d 'A cap on the rate, in MiB/s (virsh migrate-setspeed); default: unlimited. `vm-migrate set` changes it while the copy runs' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand send" -l timeout -d 'After this many seconds, pause and finish whatever is left' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand send" -l migrate-disks -d 'Non-shared storage for these disks only (by id, comma-separated); the others are on shared storage' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand send" -l streams -d 'Connections that carry guest memory side by side over tcp: or unix:, each with a thread at either end (QEMU\'s multifd-channels); worth it where both hosts have cores to spare. Default 1; exec: always uses one' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand send" -l auto-converge -d 'Hold the vCPUs back while the rounds do not shrink'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand send" -l copy-storage-all -d 'Non-shared storage: every writable disk\'s contents go along, into images the destination has made with the same size (its --disk names them)'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand send" -s q -l quiet -d 'No progress bar, even on a terminal'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand send" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand recv" -l listen -d 'Where to wait: tcp:HOST:PORT (port 0: any free one, printed), unix:PATH, or - for the stream on stdin and the replies on stdout (the far end of an exec: transport)' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand recv" -l spec -d 'A spec whose host-local parts (disk paths, console, taps, placement) replace the arriving ones (virsh migrate --xml)' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand recv" -l name -d 'Run under this name' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand recv" -l disk -d 'Disk ID uses PATH here. Repeatable' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand recv" -l nic -d 'NIC ID runs on this tap, or a new tap on this bridge. Repeatable' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand recv" -l console -d 'Serial console file (default: console.log in the VM\'s state folder)' -r -F
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand recv" -l paused -d 'Stay paused once arrived, until `vm-run resume`'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand recv" -s h -l help -d 'Print help'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand status" -s h -l help -d 'Print help'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand cancel" -s h -l help -d 'Print help'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand set" -l max-downtime -d 'The longest pause for the last copy, in ms' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand set" -l bandwidth -d 'A cap on the rate in MiB/s, or `unlimited` to lift it' -r
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand set" -s h -l help -d 'Print help'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand help; and not __fish_seen_subcommand_from send recv status cancel set help" -f -a "send" -d 'Send a running VM to a destination (virsh migrate --live)'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand help; and not __fish_seen_subcommand_from send recv status cancel set help" -f -a "recv" -d 'Receive a VM: listen, then start it in vm-run once it has arrived whole; prints its state as `vm-run start --detach` does'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand help; and not __fish_seen_subcommand_from send recv status cancel set help" -f -a "status" -d 'How a migration in progress is doing (virsh domjobinfo)'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand help; and not __fish_seen_subcommand_from send recv status cancel set help" -f -a "cancel" -d 'Abandon a migration in progress; the VM runs on here (virsh domjobabort)'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand help; and not __fish_seen_subcommand_from send recv status cancel set help" -f -a "set" -d 'Change the downtime budget or the bandwidth cap of a migration in progress (virsh migrate-setmaxdowntime, migrate-setspeed); prints its progress with the knobs as they now are. `status` shows them too (virsh migrate-getspeed)'
complete -c vm-migrate -n "__fish_vm_migrate_using_subcommand help; and not __fish_seen_subcommand_from send recv status cancel set help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
