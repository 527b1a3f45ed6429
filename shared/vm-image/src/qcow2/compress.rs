//! Cluster compression as QEMU reads it: raw deflate with a 4 KiB window
//! (QEMU inflates with windowBits -12, so a larger window would be refused).

use flate2::{Compress, Compression, FlushCompress, Status};

/// Compresses one cluster; `None` when the result would not be smaller
/// than the cluster (QEMU then stores the cluster uncompressed).
pub fn compress_cluster(data: &[u8]) -> Option<Vec<u8>> {
    let mut c = Compress::new_with_window_bits(Compression::default(), false, 12);
    let mut out = Vec::with_capacity(data.len() - 1);
    match c.compress_vec(data, &mut out, FlushCompress::Finish) {
        Ok(Status::StreamEnd) if out.len() < data.len() - 1 => Some(out),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_and_not() {
        let text: Vec<u8> = b"vmtools ".iter().copied().cycle().take(65536).collect();
        let c = compress_cluster(&text).expect("repetitive data compresses");
        assert!(c.len() < 4096);
        let mut d = flate2::Decompress::new_with_window_bits(false, 12);
        let mut back = Vec::with_capacity(65536);
        d.decompress_vec(&c, &mut back, flate2::FlushDecompress::Finish)
            .unwrap();
        assert_eq!(back, text);
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(compress_cluster(&noise).is_none());
    }
}
