//! One layer: its expected entries from the tar (containerd applier semantics), verification against the snapshot fs, and repair.
