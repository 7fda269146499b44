complete -c subvol-recv -s f -l file -d 'Read the stream from FILE instead of stdin' -r -F
complete -c subvol-recv -s E -l max-errors -d 'Stop at the Nth failed command (default 1; 0: never), as btrfs receive -E' -r
complete -c subvol-recv -s m -d 'The mount point of DEST\'s file system (found in /proc/self/mounts otherwise)' -r -F
complete -c subvol-recv -l dump-format -d 'With --dump: whose text to print, btrfs-progs 6.2 to 6.9 (progs-6.2) or 6.9.1, 6.10 and later (progs-6.10), as `subvol dump --format`' -r -f -a "progs-6.2\t'btrfs-progs 6.2 to 6.9 (Debian 12): xattr names and values and clone sources raw'
progs-6.10\t'btrfs-progs 6.9.1, 6.10 and later: every name and value escaped'"
complete -c subvol-recv -l verify -d 'Require every segment to be signed by one of these public keys, and apply nothing before its signature verified (repeatable); nothing is committed before the whole input verified' -r -F
complete -c subvol-recv -l dedup-from -d 'Clone WRITE data found in the files under DIR instead of writing it (repeatable)' -r -F
complete -c subvol-recv -l checkpoint-every -d 'Take a checkpoint of the subvolume being received every BYTES of input (0: never)' -r
complete -c subvol-recv -l checkpoint-overhead -d 'Skip checkpoints that would take more than PERCENT of the receive\'s time so far (100: take every one)' -r
complete -c subvol-recv -l resume-from -d 'The input is the stream from byte OFFSET on (as `--resume-offset` printed): take up the interrupted receive in DEST that restarts there' -r
complete -c subvol-recv -s e -d 'Stop after the first END command (for streams made with `btrfs send -e`)'
complete -c subvol-recv -l keep-incomplete -d 'With -E: commit the subvolumes even though commands failed and were skipped (btrfs receive\'s behaviour); they are read-only and carry the received UUID, but are incomplete. The exit status stays non-zero'
complete -c subvol-recv -s C -l chroot -d 'Confine the receive to DEST (subvol always resolves every stream path beneath the new subvolume, so this changes nothing but is accepted)'
complete -c subvol-recv -l dump -d 'Print the stream\'s commands instead of applying them (same as `subvol dump`)'
complete -c subvol-recv -l force-decompress -d 'Write file data decompressed instead of with encoded writes'
complete -c subvol-recv -s q -l quiet -d 'Print less'
complete -c subvol-recv -s v -l verbose -d 'Print more (repeat for more detail; subvol-recv prints btrfs receive\'s lines: -v each subvolume, WRITE and CLONE, -vv every command)'
complete -c subvol-recv -l progress -d 'Show a progress line on stderr even when it is not a terminal'
complete -c subvol-recv -l clone-from-any -d 'Let CLONE read from any read-only subvolume on DEST\'s file system that the stream names by its own UUID'
complete -c subvol-recv -l no-resume -d 'Do not resume an interrupted receive of this stream: start over (removing it)'
complete -c subvol-recv -l resume-offset -d 'Print the input offset where the interrupted receive in DEST restarts (0 if there is none) and exit'
complete -c subvol-recv -l list-incomplete -d 'List the interrupted receives kept for resume in DEST and exit'
complete -c subvol-recv -l json -d 'With --list-incomplete: print JSON'
complete -c subvol-recv -l drop-incomplete -d 'Remove the interrupted receives kept for resume in DEST and exit'
complete -c subvol-recv -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol-recv -s V -l version -d 'Print version'
