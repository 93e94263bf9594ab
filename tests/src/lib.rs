pub mod bench;
pub mod containerd;
pub mod cri;
mod error;
pub mod fs_tree;
pub mod image_builder;
pub mod kubectl;
pub mod kubelet;
pub mod node_helper_cli;
pub mod probe;
pub mod registry;
pub mod sim;

pub use error::TestError;
