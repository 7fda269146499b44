//! Pipe buffer sizing.

/// Pipe buffer size for stdin/stdout when they are pipes: fewer context switches between the
/// processes of a pipeline (`btrfs send | subvol sign | ssh ...`).
pub const PIPE_BUF: usize = 1 << 20;

/// Enlarges a pipe's buffer to [`PIPE_BUF`] if `fd` is a pipe. Best effort: errors are
/// ignored, as an unprivileged user may be capped by /proc/sys/fs/pipe-max-size and other file
/// types have no such buffer.
pub fn enlarge_pipe(fd: impl std::os::fd::AsFd) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_BUF);
}
