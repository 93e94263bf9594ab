
pub mod events;
