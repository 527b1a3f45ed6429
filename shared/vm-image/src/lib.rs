//! Disk images for the vmtools: raw and qcow2, with QEMU-compatible locks
//! and one [`Block`] interface shared by vm-img and the VMM's virtio-blk.

mod block;
pub mod commit;
pub mod crypto;
mod error;
mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
mod image;
pub mod lock;
pub mod nbd;
pub mod qcow2;
pub mod tracked;

pub use block::{Alignment, Block};
pub use error::{os_text, Error, Result, TableFault, LOCK_QUESTION};
pub use format::Format;
pub use image::{
    file_len, open_image_file, resolve_backing, same_file, Extent, Image, Layer, OpenOptions,
};
