
pub mod containerd;
pub mod image_builder;
