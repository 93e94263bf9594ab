pub mod bench;
pub mod containerd;
pub mod fs_tree;
pub mod image_builder;
pub mod kubelet;
pub mod node_helper_cli;
pub mod probe;
pub mod sim;
