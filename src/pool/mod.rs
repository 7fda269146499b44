//! Pools: directories on btrfs holding received versions as read-only subvolumes; subvolume
//! listing, snapshots, deletion, retention, and the loopback-image pool for hosts without btrfs.
