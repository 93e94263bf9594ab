
pub mod containerd;
pub mod image_builder;
pub mod fs_tree;
pub mod node_helper_cli;
pub mod sim;
pub mod kubelet;
pub mod bench;
