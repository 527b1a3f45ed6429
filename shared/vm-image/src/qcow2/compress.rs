//! Cluster compression as QEMU reads it: raw deflate with a 4 KiB window
//! (QEMU inflates with windowBits -12, so a larger window would be refused),
//! or one zstd frame (an image with `compression_type=zstd`).

use std::io::{self, Read};

use flate2::{Compress, Compression, FlushCompress, Status};

use super::header::{CompressionType, Header};
use crate::host::Host;

/// The largest zstd window a compressed cluster may ask for: QEMU's
/// clusters are at most 2 MiB, and a frame's window never needs to be
/// larger than its content. A hostile frame asking for more is refused
/// before anything is allocated.
const MAX_ZSTD_WINDOW: u64 = 4 << 20;

/// Compresses one cluster; `None` when the result would not be smaller
/// than the cluster (QEMU then stores the cluster uncompressed).
pub fn compress_cluster(data: &[u8], kind: CompressionType) -> Option<Vec<u8>> {
    let out = match kind {
        CompressionType::Zlib => {
            let mut c = Compress::new_with_window_bits(Compression::default(), false, 12);
            let mut out = Vec::with_capacity(data.len() - 1);
            match c.compress_vec(data, &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => out,
                _ => return None,
            }
        }
        // QEMU's level (zstd's default, 3); one frame, no checksum.
        CompressionType::Zstd => zstd::bulk::compress(data, 3).ok()?,
    };
    (out.len() < data.len() - 1).then_some(out)
}

/// Reads and inflates the compressed cluster an L2 entry names (`host`
/// and `len` as `meta::decode_l2` gives them) from `file`, `file_len`
/// bytes long. The entry is the image's, so hostile: it may span at most
/// two clusters' worth of sectors and must start inside the file. Its last
/// sector may be cut by the end of the file: QEMU writes only the
/// compressed bytes, and reads past the end as zeroes.
pub fn read_compressed(
    file: &Host,
    header: &Header,
    file_len: u64,
    (host, len): (u64, u64),
) -> io::Result<Vec<u8>> {
    let cs = header.cluster_size();
    if len > 2 * cs || host >= file_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("compressed cluster at 0x{host:x} (+{len}) lies outside the image"),
        ));
    }
    let mut compressed = vec![0u8; len.min(file_len - host) as usize];
    file.read_exact_at(&mut compressed, host)?;
    let mut out = vec![0u8; cs as usize];
    match header.compression_type {
        CompressionType::Zstd => zstd_decompress_cluster(&compressed, &mut out)?,
        // Raw deflate; what follows the stream in its last sector is not
        // part of it.
        CompressionType::Zlib => flate2::read::DeflateDecoder::new(&compressed[..])
            .read_exact(&mut out)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("compressed cluster at 0x{host:x}: {e}"),
                )
            })?,
    }
    Ok(out)
}

/// Decompresses one zstd-compressed cluster into `out` (its whole size).
/// As QEMU, the frame must give exactly one cluster; bytes after it (the
/// rest of the last sector) are ignored. The data is the image's, so
/// hostile: output is capped at the cluster and the window is bounded.
pub fn zstd_decompress_cluster(compressed: &[u8], out: &mut [u8]) -> io::Result<()> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut d =
        ruzstd::decoding::StreamingDecoder::new_with_max_window_size(compressed, MAX_ZSTD_WINDOW)
            .map_err(|e| bad(format!("compressed cluster: {e}")))?;
    let mut got = 0;
    while got < out.len() {
        match d.read(&mut out[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(bad(format!("compressed cluster: {e}"))),
        }
    }
    let mut extra = [0u8; 1];
    let more = d
        .read(&mut extra)
        .map_err(|e| bad(format!("compressed cluster: {e}")))?;
    if got != out.len() || more != 0 {
        return Err(bad(format!(
            "compressed cluster decompresses to {} bytes, not the cluster size {}",
            if more != 0 {
                "more than the cluster's".to_string()
            } else {
                got.to_string()
            },
            out.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_and_not() {
        let text: Vec<u8> = b"vmtools ".iter().copied().cycle().take(65536).collect();
        let c = compress_cluster(&text, CompressionType::Zlib).expect("repetitive data compresses");
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
        assert!(compress_cluster(&noise, CompressionType::Zlib).is_none());
        assert!(compress_cluster(&noise, CompressionType::Zstd).is_none());
    }

    #[test]
    fn zstd_clusters_round_trip_and_hostile_frames_fail() {
        let text: Vec<u8> = b"vmtools ".iter().copied().cycle().take(65536).collect();
        let c = compress_cluster(&text, CompressionType::Zstd).expect("repetitive data compresses");
        assert!(c.len() < 4096);
        // The rest of the last sector follows the frame in an image.
        let mut padded = c.clone();
        padded.resize(c.len().div_ceil(512) * 512, 0xaa);
        let mut back = vec![0u8; 65536];
        zstd_decompress_cluster(&padded, &mut back).unwrap();
        assert_eq!(back, text);
        // Too short or too long for the cluster; a cut frame; noise.
        assert!(zstd_decompress_cluster(&c, &mut vec![0u8; 65536 * 2]).is_err());
        assert!(zstd_decompress_cluster(&c, &mut vec![0u8; 4096]).is_err());
        assert!(zstd_decompress_cluster(&c[..c.len() / 2], &mut back).is_err());
        assert!(zstd_decompress_cluster(&[0x5a; 600], &mut back).is_err());
        // A frame header asking for a 1 TiB window: refused, not allocated.
        let mut huge = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8];
        huge.extend_from_slice(&[0; 16]);
        assert!(zstd_decompress_cluster(&huge, &mut back).is_err());
    }
}
