//! Reading a JSON document a user names: a spec or state file, or stdin.
//!
//! The tools read the whole document before parsing it, so a name that is
//! no document (`/dev/zero`, a disk image, a pipe that never ends) would
//! otherwise be read until memory runs out. A document is capped, as virsh
//! caps the XML it reads (10 MiB); a spec is a few KiB.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The largest document the tools read.
pub const MAX_DOCUMENT: u64 = 10 << 20;

/// All of `r`, as text, if it is at most [`MAX_DOCUMENT`] bytes.
pub fn read_document_from(r: impl Read) -> io::Result<String> {
    let mut text = String::new();
    r.take(MAX_DOCUMENT + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_DOCUMENT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "larger than {} MiB: not a JSON document of ours",
                MAX_DOCUMENT >> 20
            ),
        ));
    }
    Ok(text)
}

/// The file at `path`, as text, if it is at most [`MAX_DOCUMENT`] bytes.
pub fn read_document(path: &Path) -> io::Result<String> {
    read_document_from(File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_input_is_refused_at_the_cap() {
        let e = read_document(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than 10 MiB"), "{e}");
        let exact = vec![b' '; MAX_DOCUMENT as usize];
        assert_eq!(read_document_from(&exact[..]).unwrap().len(), exact.len());
        let over = vec![b' '; MAX_DOCUMENT as usize + 1];
        assert!(read_document_from(&over[..]).is_err());
    }
}
