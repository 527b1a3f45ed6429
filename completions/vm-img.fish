# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vm_img_global_optspecs
    string join \n h/help V/version
end

function __fish_vm_img_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vm_img_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vm_img_using_subcommand
    set -l cmd (__fish_vm_img_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vm-img -n "__fish_vm_img_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vm-img -n "__fish_vm_img_needs_command" -s V -l version -d 'Print version'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "create" -d 'Create a new image'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "info" -d 'Describe an image'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "check" -d 'Check a qcow2 image for leaks and corruptions, optionally repairing them'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "resize" -d 'Change an image\'s virtual size'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "convert" -d 'Copy an image to another file, changing format or compressing'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "compare" -d 'Compare the guest-visible contents of two images'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "map" -d 'Show how an image\'s guest ranges are stored'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "commit" -d 'Write an overlay\'s changes into its backing file'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "rebase" -d 'Change an image\'s backing file'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "snapshot" -d 'List, create, apply or delete a qcow2 image\'s internal snapshots'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "dd" -d 'Copy part of an image into a new one, with dd\'s operands'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "measure" -d 'How large a new image would be: for a size, or for an image\'s data'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "amend" -d 'Change a qcow2 image\'s options in place (compat, lazy_refcounts, refcount_bits, size, backing_file, backing_fmt)'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "bitmap" -d 'Add, remove, clear, enable, disable or merge a qcow2 image\'s persistent dirty bitmaps (what incremental backups read)'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "bench" -d 'Time a run of reads or writes against an image, as qemu-img bench'
complete -c vm-img -n "__fish_vm_img_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-img -n "__fish_vm_img_using_subcommand create" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand create" -s o -d 'Format options: backing_file, backing_fmt, cluster_size, preallocation, lazy_refcounts, compat, refcount_bits, size (comma separated, key=value; `help` lists them all)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand create" -s b -l backing -d 'Backing file (qcow2 only)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand create" -s F -l backing-format -d 'Backing file format' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand create" -l object -d 'A secret for encryption: `secret,id=ID,data=PASSWORD[,format=base64]` or `secret,id=ID,file=PATH`, named by `-o encrypt.key-secret=ID` (qcow2 with `encrypt.format=luks`) or `-o key-secret=ID` (`-f luks`)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand create" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand create" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand create" -s u -d 'Do not open the backing file (the size must then be given)'
complete -c vm-img -n "__fish_vm_img_using_subcommand create" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand info" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand info" -l output -r -f -a "human\t''
json\t''"
complete -c vm-img -n "__fish_vm_img_using_subcommand info" -l object -d 'A secret for an encrypted image (`secret,id=ID,data=...`), named by `encrypt.key-secret=ID` in an --image-opts list' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand info" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand info" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand info" -l backing-chain -d 'Describe every image of the backing chain'
complete -c vm-img -n "__fish_vm_img_using_subcommand info" -s U -l force-share -d 'Read without locks (force share), as for an image in use'
complete -c vm-img -n "__fish_vm_img_using_subcommand info" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand check" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand check" -l output -r -f -a "human\t''
json\t''"
complete -c vm-img -n "__fish_vm_img_using_subcommand check" -s r -l repair -d 'Repair leaks, or all errors that can be repaired' -r -f -a "leaks\t''
all\t''"
complete -c vm-img -n "__fish_vm_img_using_subcommand check" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand check" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand check" -s U -l force-share
complete -c vm-img -n "__fish_vm_img_using_subcommand check" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand resize" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand resize" -l preallocation -d 'Preallocate the grown area: off, metadata (qcow2: clusters mapped, nothing written), falloc (fallocate) or full (zeroes written)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand resize" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand resize" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand resize" -l shrink -d 'Allow shrinking (data past the new end is lost)'
complete -c vm-img -n "__fish_vm_img_using_subcommand resize" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s f -d 'Source format; probed when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s O -d 'Output format (default raw)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s l -d 'Convert an internal snapshot of the source: `snapshot.id=ID`, `snapshot.name=NAME`, or an ID or name' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s B -d 'Give the qcow2 output this backing file, and copy only what the source\'s top layer holds (the backing file holds the rest)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s F -d 'The backing file\'s format (needed with -B)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s S -d 'Zero runs shorter than SIZE are written as data (default 4k; 0 writes every byte, for a fully allocated output)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s m -d 'qemu-img\'s number of parallel copy requests (1..16). Taken and checked; vm-img\'s own parallelism (a worker per core with -c) stays' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s o -d 'Output format options, as for create' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s t -d 'Cache mode for the output: writeback (default) ends with one fsync, unsafe skips it; none, writethrough and directsync are accepted and behave as writeback (the output is new, so one fsync at the end gives the same durability)' -r -f -a "none\t''
writeback\t''
writethrough\t''
directsync\t''
unsafe\t''"
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s T -d 'Cache mode for the source (accepted for compatibility)' -r -f -a "none\t''
writeback\t''
writethrough\t''
directsync\t''
unsafe\t''"
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -l object -d 'A secret for an encrypted image (`secret,id=ID,data=...`), named by `encrypt.key-secret=ID` in an --image-opts list' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -l image-opts -d 'The sources are option lists (`driver=qcow2,file.filename=PATH`), not file names'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s c -d 'Compress the output (qcow2), on every core'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s n -d 'Write into OUTPUT, which exists already (no new image is made)'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s W -d 'Allow out-of-order writes (qemu-img\'s -W). Taken as allowed: vm-img writes in order, which -W permits too'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s C -d 'Try copy offloading (qemu-img\'s -C); qemu-img falls back to copying when it is not possible, and vm-img always copies. Refused with -c and -S, as qemu-img'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s p -d 'Show a progress bar'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s U -l force-share
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s q -d 'Quiet'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -l salvage -d 'Go on past read errors: a sector that cannot be read is written as zeroes, with a warning naming it (and a range whose allocation cannot be read is copied as data)'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -l bitmaps -d 'Copy the source\'s persistent dirty bitmaps too (qcow2 to qcow2)'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -l skip-broken-bitmaps -d 'With --bitmaps, leave out bitmaps that were not saved cleanly (in-use) instead of failing'
complete -c vm-img -n "__fish_vm_img_using_subcommand convert" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand compare" -s f -d 'First image\'s format' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand compare" -s F -d 'Second image\'s format' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand compare" -l object -d 'A secret for an encrypted image (`secret,id=ID,data=...`), named by `encrypt.key-secret=ID` in an --image-opts list' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand compare" -s s -d 'Strict: images of different sizes, or allocated in one and not the other, differ even where both read the same'
complete -c vm-img -n "__fish_vm_img_using_subcommand compare" -s U -l force-share
complete -c vm-img -n "__fish_vm_img_using_subcommand compare" -s p -d 'Show a progress bar'
complete -c vm-img -n "__fish_vm_img_using_subcommand compare" -s q
complete -c vm-img -n "__fish_vm_img_using_subcommand compare" -l image-opts -d 'Both images are option lists (`driver=qcow2,file.filename=PATH`)'
complete -c vm-img -n "__fish_vm_img_using_subcommand compare" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand map" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand map" -l output -r -f -a "human\t''
json\t''"
complete -c vm-img -n "__fish_vm_img_using_subcommand map" -s s -l start-offset -d 'Start of the range to map' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand map" -s l -l max-length -d 'Length of the range to map' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand map" -l object -d 'A secret for an encrypted image (`secret,id=ID,data=...`), named by `encrypt.key-secret=ID` in an --image-opts list' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand map" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand map" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand map" -s U -l force-share
complete -c vm-img -n "__fish_vm_img_using_subcommand map" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand commit" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand commit" -s t -r -f -a "none\t''
writeback\t''
writethrough\t''
directsync\t''
unsafe\t''"
complete -c vm-img -n "__fish_vm_img_using_subcommand commit" -s b -d 'Commit into this image of the chain (default: the backing file)' -r -F
complete -c vm-img -n "__fish_vm_img_using_subcommand commit" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand commit" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand commit" -s d -d 'Keep the overlay\'s data (do not empty it)'
complete -c vm-img -n "__fish_vm_img_using_subcommand commit" -s p
complete -c vm-img -n "__fish_vm_img_using_subcommand commit" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand rebase" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand rebase" -s t -r -f -a "none\t''
writeback\t''
writethrough\t''
directsync\t''
unsafe\t''"
complete -c vm-img -n "__fish_vm_img_using_subcommand rebase" -s b -d 'The new backing file; "" removes it (the image becomes standalone)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand rebase" -s F -d 'The new backing file\'s format' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand rebase" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand rebase" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand rebase" -s u -d 'Unsafe: only rewrite the backing file name, copy nothing'
complete -c vm-img -n "__fish_vm_img_using_subcommand rebase" -s p
complete -c vm-img -n "__fish_vm_img_using_subcommand rebase" -s U -l force-share
complete -c vm-img -n "__fish_vm_img_using_subcommand rebase" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand snapshot" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand snapshot" -s a -d 'Revert the image to SNAPSHOT (its ID, else its name)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand snapshot" -s c -d 'Take a snapshot named SNAPSHOT of the image as it is now' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand snapshot" -s d -d 'Delete SNAPSHOT (its ID, else its name)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand snapshot" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand snapshot" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand snapshot" -s l -d 'List the snapshots (also what happens with no action given)'
complete -c vm-img -n "__fish_vm_img_using_subcommand snapshot" -s U -l force-share -d 'List without locks (force share), as for an image in use'
complete -c vm-img -n "__fish_vm_img_using_subcommand snapshot" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand dd" -s f -d 'Input format; probed when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand dd" -s O -d 'Output format (default raw)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand dd" -s U -l force-share -d 'Read the input without locks (force share)'
complete -c vm-img -n "__fish_vm_img_using_subcommand dd" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand measure" -s f -d 'The measured image\'s format; probed when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand measure" -s l -d 'Measure the image as it was at this internal snapshot (an ID or name, or `snapshot.id=ID`/`snapshot.name=NAME`)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand measure" -s O -d 'Format of the image to be made (default raw)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand measure" -s o -d 'Creation options of the image to be made, as for create' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand measure" -l size -d 'Measure an empty image of this virtual size instead of FILENAME' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand measure" -l output -r -f -a "human\t''
json\t''"
complete -c vm-img -n "__fish_vm_img_using_subcommand measure" -l object -d 'A secret (as for create); checked, not needed to measure' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand measure" -l image-opts -d 'FILENAME is an option list (`driver=qcow2,file.filename=PATH`)'
complete -c vm-img -n "__fish_vm_img_using_subcommand measure" -s U -l force-share -d 'Read FILENAME without locks (force share)'
complete -c vm-img -n "__fish_vm_img_using_subcommand measure" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand amend" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand amend" -s o -d 'Options to change (comma separated, key=value): compat (0.10, 1.1), lazy_refcounts, refcount_bits, size, backing_file, backing_fmt' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand amend" -s t -d 'Cache mode (accepted for compatibility; amend always syncs)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand amend" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand amend" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand amend" -s p -d 'Show progress (qemu-img\'s steps for a refcount width change; 0 and 100% for the rest)'
complete -c vm-img -n "__fish_vm_img_using_subcommand amend" -l force -d 'Allow changes that may lose data (accepted for compatibility)'
complete -c vm-img -n "__fish_vm_img_using_subcommand amend" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -l merge -d 'Add SOURCE\'s bits to BITMAP (SOURCE is in -b\'s image, else in this one)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -s g -l granularity -d 'Granularity of a new bitmap (bytes, a power of two from 512; K and M suffixes); the cluster size within 4K..64K by default' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -s b -d 'The image holding --merge\'s SOURCE bitmap' -r -F
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -s F -d 'The format of -b\'s image' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -l add -d 'Add BITMAP, empty and enabled (it then records every write)'
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -l remove -d 'Remove BITMAP'
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -l clear -d 'Clear BITMAP\'s bits'
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -l enable -d 'Enable BITMAP: it records writes again'
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -l disable -d 'Disable BITMAP: it keeps its bits and records no writes'
complete -c vm-img -n "__fish_vm_img_using_subcommand bitmap" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s f -l format -d 'Image format (raw, qcow2); probed from the contents when left out' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s c -d 'Number of requests (default 75000)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s d -d 'Requests in flight at once (default 64)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s s -d 'Bytes per request; takes K, M, G (default 4096)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s S -d 'Distance between requests (default: the request size)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s o -d 'Offset of the first request (default 0)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -l pattern -d 'The byte written (0 to 255, default 0)' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -l flush-interval -d 'Flush after every N write requests' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s t -d 'Cache mode: none and directsync open with O_DIRECT; writeback, writethrough and unsafe do not' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s i -d 'AIO mode (threads, native, io_uring): taken, and requests run on threads whatever it says' -r
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s q -l quiet -d 'Quiet: no progress or informational messages'
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -l image-opts -d 'FILENAME is an option list (driver=qcow2,file.filename=PATH), as qemu-img\'s --image-opts; only the file protocol is supported'
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s w -d 'Write instead of read'
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -l no-drain -d 'With --flush-interval: flush without waiting for the requests in flight'
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s n -d 'O_DIRECT (cache mode none)'
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s U -l force-share -d 'Open without locks (force share; reads only)'
complete -c vm-img -n "__fish_vm_img_using_subcommand bench" -s h -l help -d 'Print help'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "create" -d 'Create a new image'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "info" -d 'Describe an image'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "check" -d 'Check a qcow2 image for leaks and corruptions, optionally repairing them'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "resize" -d 'Change an image\'s virtual size'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "convert" -d 'Copy an image to another file, changing format or compressing'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "compare" -d 'Compare the guest-visible contents of two images'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "map" -d 'Show how an image\'s guest ranges are stored'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "commit" -d 'Write an overlay\'s changes into its backing file'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "rebase" -d 'Change an image\'s backing file'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "snapshot" -d 'List, create, apply or delete a qcow2 image\'s internal snapshots'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "dd" -d 'Copy part of an image into a new one, with dd\'s operands'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "measure" -d 'How large a new image would be: for a size, or for an image\'s data'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "amend" -d 'Change a qcow2 image\'s options in place (compat, lazy_refcounts, refcount_bits, size, backing_file, backing_fmt)'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "bitmap" -d 'Add, remove, clear, enable, disable or merge a qcow2 image\'s persistent dirty bitmaps (what incremental backups read)'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "bench" -d 'Time a run of reads or writes against an image, as qemu-img bench'
complete -c vm-img -n "__fish_vm_img_using_subcommand help; and not __fish_seen_subcommand_from create info check resize convert compare map commit rebase snapshot dd measure amend bitmap bench help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
