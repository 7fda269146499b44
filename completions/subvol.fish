# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_subvol_global_optspecs
    string join \n h/help V/version
end

function __fish_subvol_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_subvol_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_subvol_using_subcommand
    set -l cmd (__fish_subvol_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c subvol -n "__fish_subvol_needs_command" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_needs_command" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "dump" -d 'Print a send stream\'s commands as `btrfs receive --dump` does (or as JSON lines)'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "verify" -d 'Check a send stream\'s framing, versions, CRCs and attributes without applying it'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "recv" -d 'Receive a send stream into a new read-only subvolume under DEST (hardened, atomic)'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "send" -d 'Make a send stream from a read-only btrfs subvolume (kernel) or from a plain directory tree'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "sign" -d 'Add ed25519 signature blocks to a send stream'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "keygen" -d 'Generate an ed25519 key pair for signing streams'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "trust" -d 'Manage a repository\'s trust metadata: roles, thresholds, key rotation, the timestamp'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "digest" -d 'Print a canonical digest of a directory tree (types, modes, owners, contents, xattrs, hard links, holes, times) to compare received trees'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "publish" -d 'Publish a version to a mirror repository of plain files'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "pull" -d 'Bring a pool to a version from a mirror along the cheapest verified chain of streams'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "push" -d 'Mirror a directory repository to an OCI registry (oci://HOST[:PORT]/NAME[:CHANNEL])'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "remote" -d 'Manage remotes: named lists of mirror URLs with the keys to trust, kept as configuration'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "pool" -d 'Manage pools (directories on btrfs holding received versions)'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "list" -d 'List the subvolumes under a directory on btrfs'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "show" -d 'Show one subvolume\'s identity and state'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "snapshot" -d 'Snapshot a subvolume'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "delete" -d 'Delete subvolumes'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "deploy" -d 'Make a version of a pool the current one at a path, switched atomically'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "rollback" -d 'Switch a deployed path back to its previous deployment'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "status" -d 'Show what is deployed at a path, the previous deployment, and the pool\'s versions'
complete -c subvol -n "__fish_subvol_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c subvol -n "__fish_subvol_using_subcommand dump" -s f -l file -d 'Read the stream from FILE instead of stdin' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand dump" -l format -d 'Whose text to print: btrfs-progs 6.2 to 6.9 (progs-6.2), or 6.9.1, 6.10 and later (progs-6.10: xattr names and values and clone sources escaped too)' -r -f -a "progs-6.2\t'btrfs-progs 6.2 to 6.9 (Debian 12): xattr names and values and clone sources raw'
progs-6.10\t'btrfs-progs 6.9.1, 6.10 and later: every name and value escaped'"
complete -c subvol -n "__fish_subvol_using_subcommand dump" -l json -d 'Print one JSON object per header and command instead of text'
complete -c subvol -n "__fish_subvol_using_subcommand dump" -l all -d 'Continue after the first END through all concatenated streams'
complete -c subvol -n "__fish_subvol_using_subcommand dump" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand dump" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand verify" -s f -l file -d 'Read the stream from FILE instead of stdin' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand verify" -l key -d 'Also check signature blocks against this public key (repeatable: any listed key may sign)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand verify" -l json -d 'Print the summary (or the error) as one JSON object'
complete -c subvol -n "__fish_subvol_using_subcommand verify" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand verify" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -s f -l file -d 'Read the stream from FILE instead of stdin' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand recv" -s E -l max-errors -d 'Stop at the Nth failed command (default 1; 0: never), as btrfs receive -E' -r
complete -c subvol -n "__fish_subvol_using_subcommand recv" -s m -d 'The mount point of DEST\'s file system (found in /proc/self/mounts otherwise)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l dump-format -d 'With --dump: whose text to print, btrfs-progs 6.2 to 6.9 (progs-6.2) or 6.9.1, 6.10 and later (progs-6.10), as `subvol dump --format`' -r -f -a "progs-6.2\t'btrfs-progs 6.2 to 6.9 (Debian 12): xattr names and values and clone sources raw'
progs-6.10\t'btrfs-progs 6.9.1, 6.10 and later: every name and value escaped'"
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l verify -d 'Require every segment to be signed by one of these public keys, and apply nothing before its signature verified (repeatable); nothing is committed before the whole input verified' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l dedup-from -d 'Clone WRITE data found in the files under DIR instead of writing it (repeatable)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l checkpoint-every -d 'Take a checkpoint of the subvolume being received every BYTES of input (0: never)' -r
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l checkpoint-overhead -d 'Skip checkpoints that would take more than PERCENT of the receive\'s time so far (100: take every one)' -r
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l resume-from -d 'The input is the stream from byte OFFSET on (as `--resume-offset` printed): take up the interrupted receive in DEST that restarts there' -r
complete -c subvol -n "__fish_subvol_using_subcommand recv" -s e -d 'Stop after the first END command (for streams made with `btrfs send -e`)'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l keep-incomplete -d 'With -E: commit the subvolumes even though commands failed and were skipped (btrfs receive\'s behaviour); they are read-only and carry the received UUID, but are incomplete. The exit status stays non-zero'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -s C -l chroot -d 'Confine the receive to DEST (subvol always resolves every stream path beneath the new subvolume, so this changes nothing but is accepted)'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l dump -d 'Print the stream\'s commands instead of applying them (same as `subvol dump`)'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l force-decompress -d 'Write file data decompressed instead of with encoded writes'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -s q -l quiet -d 'Print less'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -s v -l verbose -d 'Print more (repeat for more detail; subvol-recv prints btrfs receive\'s lines: -v each subvolume, WRITE and CLONE, -vv every command)'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l progress -d 'Show a progress line on stderr even when it is not a terminal'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l clone-from-any -d 'Let CLONE read from any read-only subvolume on DEST\'s file system that the stream names by its own UUID'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l no-resume -d 'Do not resume an interrupted receive of this stream: start over (removing it)'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l resume-offset -d 'Print the input offset where the interrupted receive in DEST restarts (0 if there is none) and exit'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l list-incomplete -d 'List the interrupted receives kept for resume in DEST and exit'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l json -d 'With --list-incomplete: print JSON'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -l drop-incomplete -d 'Remove the interrupted receives kept for resume in DEST and exit'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand recv" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand send" -s p -l parent -d 'Send incrementally from PARENT (a read-only subvolume, or a directory tree with a tree SOURCE)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand send" -s c -l clone-src -d 'Let the kernel clone data from this read-only subvolume (repeatable; kernel send only)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand send" -l proto -d 'Stream protocol version: 1 (default), 2, or 0 for the highest supported' -r
complete -c subvol -n "__fish_subvol_using_subcommand send" -s f -d 'Write the stream to FILE instead of stdout (a new file is mode 0600, as btrfs send makes it; FILE is replaced only by a complete stream, and left as it was on any failure)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand send" -l uuid -d 'UUID of the tree stream instead of the one derived from the tree\'s metadata' -r
complete -c subvol -n "__fish_subvol_using_subcommand send" -l parent-uuid -d 'UUID of the parent tree instead of the one derived from its metadata (what the receiver of the parent\'s stream recorded)' -r
complete -c subvol -n "__fish_subvol_using_subcommand send" -l sign -d 'Sign the stream with this secret key (see `subvol keygen`)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand send" -l compressed-data -d 'Send compressed extents as they are stored (implies --proto 2; kernel send only)'
complete -c subvol -n "__fish_subvol_using_subcommand send" -s e -d 'With several SOURCEs: make one stream of them (no END between the subvolumes), as `btrfs send -e`; the receiver needs to know this format (btrfs receive and subvol-recv do)'
complete -c subvol -n "__fish_subvol_using_subcommand send" -l no-data -d 'Send no file data: offsets and lengths only (UPDATE_EXTENT instead of WRITE)'
complete -c subvol -n "__fish_subvol_using_subcommand send" -l from-tree -d 'Read SOURCE as a directory tree even when it is a btrfs subvolume'
complete -c subvol -n "__fish_subvol_using_subcommand send" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand send" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand sign" -l key -d 'Secret key file, as written by `subvol keygen` (must not be readable by group or others)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand sign" -s f -l file -d 'Read the stream from FILE instead of stdin' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand sign" -s o -l output -d 'Write the signed stream to FILE instead of stdout (a new file is mode 0600; FILE is replaced only once the whole stream is signed, and left as it was on any failure)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand sign" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand sign" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand keygen" -s o -l output -d 'Where to write the secret key (the public key goes to PATH.pub)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand keygen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand keygen" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and not __fish_seen_subcommand_from init rotate sign timestamp help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and not __fish_seen_subcommand_from init rotate sign timestamp help" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and not __fish_seen_subcommand_from init rotate sign timestamp help" -f -a "init" -d 'Write the first root (REPO/root/1.json): the keys and thresholds of every role and the repository\'s identity'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and not __fish_seen_subcommand_from init rotate sign timestamp help" -f -a "rotate" -d 'Write the next root version (REPO/root/N+1.json): new keys or thresholds for some roles'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and not __fish_seen_subcommand_from init rotate sign timestamp help" -f -a "sign" -d 'Add signatures to a metadata file (root/N.json, release/N.json, timestamp.json)'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and not __fish_seen_subcommand_from init rotate sign timestamp help" -f -a "timestamp" -d 'Write REPO/timestamp.json naming the newest release metadata, with a short expiry (the job to run from cron with the online timestamp key)'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and not __fish_seen_subcommand_from init rotate sign timestamp help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l repo -d 'Repository directory' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l name -d 'The repository\'s name, for people' -r
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l root-key -d 'Public key file of a root key (repeatable; a file may hold several keys)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l root-threshold -d 'How many root keys must sign a root version' -r
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l release-key -d 'Public key file of a release key (repeatable)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l release-threshold -d 'How many release keys must sign release metadata' -r
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l timestamp-key -d 'Public key file of a timestamp key (repeatable)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l timestamp-threshold -d 'How many timestamp keys must sign the timestamp' -r
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l stream-key -d 'Public key file of a stream key: the keys that may sign stream files (repeatable)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l valid-for -d 'How long the root stays valid' -r
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -l sign -d 'Secret root key to sign with (repeatable)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from init" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l repo -d 'Repository directory' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l root-key -d 'Public key file of a root key (repeatable; a file may hold several keys)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l root-threshold -d 'How many root keys must sign a root version' -r
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l release-key -d 'Public key file of a release key (repeatable)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l release-threshold -d 'How many release keys must sign release metadata' -r
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l timestamp-key -d 'Public key file of a timestamp key (repeatable)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l timestamp-threshold -d 'How many timestamp keys must sign the timestamp' -r
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l stream-key -d 'Public key file of a stream key: the keys that may sign stream files (repeatable)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l valid-for -d 'How long the new root stays valid' -r
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l sign -d 'Secret root key to sign with (repeatable): old and new root keys' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from rotate" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from sign" -l key -d 'Secret key to sign with (repeatable)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from sign" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from sign" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from timestamp" -l repo -d 'Repository directory' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from timestamp" -l key -d 'Secret timestamp key' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from timestamp" -l valid-for -d 'How long the timestamp stays valid: pools refuse the repository after it (a mirror cannot freeze them for longer)' -r
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from timestamp" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from timestamp" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "init" -d 'Write the first root (REPO/root/1.json): the keys and thresholds of every role and the repository\'s identity'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "rotate" -d 'Write the next root version (REPO/root/N+1.json): new keys or thresholds for some roles'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "sign" -d 'Add signatures to a metadata file (root/N.json, release/N.json, timestamp.json)'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "timestamp" -d 'Write REPO/timestamp.json naming the newest release metadata, with a short expiry (the job to run from cron with the online timestamp key)'
complete -c subvol -n "__fish_subvol_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c subvol -n "__fish_subvol_using_subcommand digest" -l lines -d 'Print every line of the digest, not only its SHA-256'
complete -c subvol -n "__fish_subvol_using_subcommand digest" -l no-mtime -d 'Leave modification times out'
complete -c subvol -n "__fish_subvol_using_subcommand digest" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand digest" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l repo -d 'Repository directory (created if missing)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l key -d 'Secret signing key (from `subvol keygen`)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l version -d 'Version name (default: one more than the highest numeric version, or 1); it becomes the subvolume name in pools' -r
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l trees -d 'Tree store holding each published version\'s tree for later deltas [default: REPO.trees]' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l prune -d 'Retire all but the newest N versions (their streams, deltas from and to them, and their stored trees)' -r
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l valid-for -d 'How long the index stays valid (pulls refuse an expired index): 3600, 90m, 12h, 30d, 2w' -r
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l level -d 'zstd compression level (1-19)' -r
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l proto -d 'Send stream protocol version of the streams (1 or 2)' -r
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l threads -d 'Threads making streams and compressing them (default: one per core); the files written are the same for any number' -r
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l release-key -d 'Secret release key signing release/SERIAL.json in a repository with trust metadata (repeatable) [default: --key, when the root lists it as a release key]' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l timestamp-key -d 'Secret timestamp key: also write timestamp.json naming the new release' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l timestamp-valid-for -d 'How long the timestamp written with --timestamp-key stays valid' -r
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l push -d 'Then push the repository to this OCI registry (oci://HOST[:PORT]/NAME[:CHANNEL], oci+http:// for plain HTTP) as `subvol push` does (repeatable): the directory stays the repository of record (its tree store makes the next deltas)' -r
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l ca -d 'For --push: trust the PEM certificates in FILE instead of the bundled Mozilla roots' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l no-deltas -d 'Write only the full stream (and its content map) of SOURCE, no deltas: pulls then fetch the parts of the full stream whose data the pool lacks'
complete -c subvol -n "__fish_subvol_using_subcommand publish" -l json -d 'Print the result as JSON'
complete -c subvol -n "__fish_subvol_using_subcommand publish" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l into -d 'The pool: a directory on btrfs (see `subvol pool init`)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l verify -d 'Accepted public key for the index and the streams (repeatable), for a repository without trust metadata (required unless --root is given or the source is a remote, whose keys are added to these)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l root -d 'Trusted root of the repository (root/N.json from its publisher): first contact; later pulls use the newest root this pool verified (POOL/.subvol/trust/)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l mirror -d 'Another mirror of the repository, tried after the source (and a remote\'s mirrors) in the order given (repeatable): the newest valid index of all of them is used, and each file comes from the first mirror that serves it correctly' -r
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l config-dir -d 'Configuration directory of remotes (DIR/remotes.d; also $SUBVOL_CONFIG_DIR)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l version -d 'Target version (default: the newest)' -r
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l keep -d 'Keep at most N pulled versions in the pool' -r
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l plan -d 'How to reach the target: the cheaper of both (auto), a chain of stream files (chain), or the target\'s full stream rebuilt from data the pool holds plus ranges fetched (seeded)' -r -f -a "auto\t'The fewest bytes to fetch of both'
chain\t'Stream files only, whole (today\'s delta chains and fulls)'
seeded\t'The target\'s full stream, seeded from the pool (fails when it has no content map)'"
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l timeout -d 'Give an HTTP transfer up after this long without a byte (also connecting, and waiting for the response)' -r
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l min-rate -d 'Give an HTTP transfer up when it moves fewer bytes per second than this over --rate-window (0: no minimum)' -r
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l rate-window -d 'The window --min-rate is measured over' -r
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l limit-rate -d 'Move at most RATE bytes per second over HTTP (10M, 500k; 0: no limit)' -r
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l checkpoint-every -d 'Take a checkpoint of each step\'s receive every BYTES of its stream (0: never)' -r
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l checkpoint-overhead -d 'Skip checkpoints that would take more than PERCENT of the step\'s receive time so far (100: take every one)' -r
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l ca -d 'Trust the PEM certificates in FILE for HTTPS and registries instead of the bundled Mozilla roots' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l dry-run -d 'Print the plan (steps and sizes) and change nothing'
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l no-stream -d 'Download every file of a chain before receiving any (the way pulls worked before streaming; needs space for the whole chain in the cache)'
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l progress -d 'Show progress on stderr even when it is not a terminal'
complete -c subvol -n "__fish_subvol_using_subcommand pull" -s v -l verbose -d 'Print a line per step (bytes fetched, reused from an earlier pull, time)'
complete -c subvol -n "__fish_subvol_using_subcommand pull" -l json -d 'Print the result as JSON on stdout, and progress events as JSON lines on stderr'
complete -c subvol -n "__fish_subvol_using_subcommand pull" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand push" -l ca -d 'Trust the PEM certificates in FILE instead of the bundled Mozilla roots' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand push" -l timeout -d 'Give a request up after this long without a byte' -r
complete -c subvol -n "__fish_subvol_using_subcommand push" -l json -d 'Print the result as JSON'
complete -c subvol -n "__fish_subvol_using_subcommand push" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand push" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and not __fish_seen_subcommand_from add list show remove help" -l config-dir -d 'Configuration directory (remotes are files in DIR/remotes.d; also $SUBVOL_CONFIG_DIR)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand remote; and not __fish_seen_subcommand_from add list show remove help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and not __fish_seen_subcommand_from add list show remove help" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and not __fish_seen_subcommand_from add list show remove help" -f -a "add" -d 'Add a remote: a name for one or more mirror URLs of a repository and the trust to pull from them with'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and not __fish_seen_subcommand_from add list show remove help" -f -a "list" -d 'List the configured remotes'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and not __fish_seen_subcommand_from add list show remove help" -f -a "show" -d 'Show one remote: its mirrors and stored keys'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and not __fish_seen_subcommand_from add list show remove help" -f -a "remove" -d 'Remove a remote and its stored keys'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and not __fish_seen_subcommand_from add list show remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from add" -l verify -d 'Accepted public key file (repeatable); copied into the configuration' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from add" -l root -d 'Trusted root metadata file; copied into the configuration' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from add" -l config-dir -d 'Configuration directory (remotes are files in DIR/remotes.d; also $SUBVOL_CONFIG_DIR)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from add" -l force -d 'Replace a remote of that name'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from add" -l json -d 'Print the remote as JSON'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from list" -l config-dir -d 'Configuration directory (remotes are files in DIR/remotes.d; also $SUBVOL_CONFIG_DIR)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from list" -l json -d 'Print JSON'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from show" -l config-dir -d 'Configuration directory (remotes are files in DIR/remotes.d; also $SUBVOL_CONFIG_DIR)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from show" -l json -d 'Print JSON'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from remove" -l config-dir -d 'Configuration directory (remotes are files in DIR/remotes.d; also $SUBVOL_CONFIG_DIR)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a remote: a name for one or more mirror URLs of a repository and the trust to pull from them with'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the configured remotes'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one remote: its mirrors and stored keys'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a remote and its stored keys'
complete -c subvol -n "__fish_subvol_using_subcommand remote; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c subvol -n "__fish_subvol_using_subcommand pool; and not __fish_seen_subcommand_from init help" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand pool; and not __fish_seen_subcommand_from init help" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand pool; and not __fish_seen_subcommand_from init help" -f -a "init" -d 'Make PATH a pool; when PATH is not on btrfs, create a btrfs image file and loop-mount it on PATH (the default for hosts without a btrfs partition)'
complete -c subvol -n "__fish_subvol_using_subcommand pool; and not __fish_seen_subcommand_from init help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c subvol -n "__fish_subvol_using_subcommand pool; and __fish_seen_subcommand_from init" -l size -d 'Size of a new image (sparse): 512M, 8G, ...' -r
complete -c subvol -n "__fish_subvol_using_subcommand pool; and __fish_seen_subcommand_from init" -l image -d 'Image file [default: PATH.img]' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand pool; and __fish_seen_subcommand_from init" -l json -d 'Print the result as JSON'
complete -c subvol -n "__fish_subvol_using_subcommand pool; and __fish_seen_subcommand_from init" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand pool; and __fish_seen_subcommand_from init" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand pool; and __fish_seen_subcommand_from help" -f -a "init" -d 'Make PATH a pool; when PATH is not on btrfs, create a btrfs image file and loop-mount it on PATH (the default for hosts without a btrfs partition)'
complete -c subvol -n "__fish_subvol_using_subcommand pool; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c subvol -n "__fish_subvol_using_subcommand list" -l json -d 'Print JSON'
complete -c subvol -n "__fish_subvol_using_subcommand list" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand list" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand show" -l json -d 'Print JSON'
complete -c subvol -n "__fish_subvol_using_subcommand show" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand show" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand snapshot" -s r -l readonly -d 'Make the snapshot read-only'
complete -c subvol -n "__fish_subvol_using_subcommand snapshot" -l json -d 'Print JSON'
complete -c subvol -n "__fish_subvol_using_subcommand snapshot" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand snapshot" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand delete" -l json -d 'Print JSON'
complete -c subvol -n "__fish_subvol_using_subcommand delete" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand delete" -s V -l version -d 'Print version'
complete -c subvol -n "__fish_subvol_using_subcommand deploy" -l to -d 'The path to deploy at (a symbolic link subvol manages; must not exist as anything else)' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand deploy" -l pre -d 'Run CMD (with sh -c) after the new deployment is made and before the switch; if it fails, the new deployment is removed and the target is left as it was' -r
complete -c subvol -n "__fish_subvol_using_subcommand deploy" -l post -d 'Run CMD (with sh -c) after the switch (e.g. `systemctl restart app`); if it fails, the switch stays and the exit status is 1' -r
complete -c subvol -n "__fish_subvol_using_subcommand deploy" -l writable -d 'Make the deployment a writable snapshot (default read-only); nothing is carried over from the previous deployment'
complete -c subvol -n "__fish_subvol_using_subcommand deploy" -l json -d 'Print the result as JSON'
complete -c subvol -n "__fish_subvol_using_subcommand deploy" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c subvol -n "__fish_subvol_using_subcommand rollback" -l to -d 'The deployed path' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand rollback" -l pre -d 'Run CMD (with sh -c) after the new deployment is made and before the switch; if it fails, the new deployment is removed and the target is left as it was' -r
complete -c subvol -n "__fish_subvol_using_subcommand rollback" -l post -d 'Run CMD (with sh -c) after the switch (e.g. `systemctl restart app`); if it fails, the switch stays and the exit status is 1' -r
complete -c subvol -n "__fish_subvol_using_subcommand rollback" -l json -d 'Print the result as JSON'
complete -c subvol -n "__fish_subvol_using_subcommand rollback" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand status" -l to -d 'The deployed path' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand status" -l pool -d 'The pool to list [default: the current deployment\'s pool]' -r -F
complete -c subvol -n "__fish_subvol_using_subcommand status" -l json -d 'Print JSON'
complete -c subvol -n "__fish_subvol_using_subcommand status" -s h -l help -d 'Print help'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "dump" -d 'Print a send stream\'s commands as `btrfs receive --dump` does (or as JSON lines)'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "verify" -d 'Check a send stream\'s framing, versions, CRCs and attributes without applying it'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "recv" -d 'Receive a send stream into a new read-only subvolume under DEST (hardened, atomic)'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "send" -d 'Make a send stream from a read-only btrfs subvolume (kernel) or from a plain directory tree'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "sign" -d 'Add ed25519 signature blocks to a send stream'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "keygen" -d 'Generate an ed25519 key pair for signing streams'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "trust" -d 'Manage a repository\'s trust metadata: roles, thresholds, key rotation, the timestamp'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "digest" -d 'Print a canonical digest of a directory tree (types, modes, owners, contents, xattrs, hard links, holes, times) to compare received trees'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "publish" -d 'Publish a version to a mirror repository of plain files'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "pull" -d 'Bring a pool to a version from a mirror along the cheapest verified chain of streams'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "push" -d 'Mirror a directory repository to an OCI registry (oci://HOST[:PORT]/NAME[:CHANNEL])'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "remote" -d 'Manage remotes: named lists of mirror URLs with the keys to trust, kept as configuration'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "pool" -d 'Manage pools (directories on btrfs holding received versions)'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "list" -d 'List the subvolumes under a directory on btrfs'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "show" -d 'Show one subvolume\'s identity and state'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "snapshot" -d 'Snapshot a subvolume'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "delete" -d 'Delete subvolumes'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "deploy" -d 'Make a version of a pool the current one at a path, switched atomically'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "rollback" -d 'Switch a deployed path back to its previous deployment'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "status" -d 'Show what is deployed at a path, the previous deployment, and the pool\'s versions'
complete -c subvol -n "__fish_subvol_using_subcommand help; and not __fish_seen_subcommand_from dump verify recv send sign keygen trust digest publish pull push remote pool list show snapshot delete deploy rollback status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c subvol -n "__fish_subvol_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "init" -d 'Write the first root (REPO/root/1.json): the keys and thresholds of every role and the repository\'s identity'
complete -c subvol -n "__fish_subvol_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "rotate" -d 'Write the next root version (REPO/root/N+1.json): new keys or thresholds for some roles'
complete -c subvol -n "__fish_subvol_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "sign" -d 'Add signatures to a metadata file (root/N.json, release/N.json, timestamp.json)'
complete -c subvol -n "__fish_subvol_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "timestamp" -d 'Write REPO/timestamp.json naming the newest release metadata, with a short expiry (the job to run from cron with the online timestamp key)'
complete -c subvol -n "__fish_subvol_using_subcommand help; and __fish_seen_subcommand_from remote" -f -a "add" -d 'Add a remote: a name for one or more mirror URLs of a repository and the trust to pull from them with'
complete -c subvol -n "__fish_subvol_using_subcommand help; and __fish_seen_subcommand_from remote" -f -a "list" -d 'List the configured remotes'
complete -c subvol -n "__fish_subvol_using_subcommand help; and __fish_seen_subcommand_from remote" -f -a "show" -d 'Show one remote: its mirrors and stored keys'
complete -c subvol -n "__fish_subvol_using_subcommand help; and __fish_seen_subcommand_from remote" -f -a "remove" -d 'Remove a remote and its stored keys'
complete -c subvol -n "__fish_subvol_using_subcommand help; and __fish_seen_subcommand_from pool" -f -a "init" -d 'Make PATH a pool; when PATH is not on btrfs, create a btrfs image file and loop-mount it on PATH (the default for hosts without a btrfs partition)'
