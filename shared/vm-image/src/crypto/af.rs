//! LUKS's anti-forensic splitter: a key is stored spread over `stripes`
//! blocks so that wiping any one of them loses it. Each block but the
//! last is random; each is mixed into a running block that is hashed
//! ("diffused") between steps, and the last block is that running block
//! XOR the key.

use super::Hash;

/// Hashes `block` in place, digest-sized piece by piece, each piece
/// prefixed with its index (big-endian u32), as LUKS1 defines it.
fn diffuse(hash: Hash, block: &mut [u8]) {
    let d = hash.digest_len();
    for (i, piece) in block.chunks_mut(d).enumerate() {
        let mut input = Vec::with_capacity(4 + piece.len());
        input.extend_from_slice(&(i as u32).to_be_bytes());
        input.extend_from_slice(piece);
        let out = hash.digest(&input);
        let n = piece.len();
        piece.copy_from_slice(&out[..n]);
    }
}

/// Splits `key` into `stripes` blocks of `key.len()` bytes; `random`
/// fills the random blocks.
pub fn split(
    hash: Hash,
    key: &[u8],
    stripes: usize,
    random: impl Fn(&mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    let n = key.len();
    let mut out = vec![0u8; n * stripes];
    let mut acc = vec![0u8; n];
    random(&mut out[..n * (stripes - 1)])?;
    for s in 0..stripes - 1 {
        for (a, b) in acc.iter_mut().zip(&out[s * n..(s + 1) * n]) {
            *a ^= b;
        }
        diffuse(hash, &mut acc);
    }
    for ((o, a), k) in out[(stripes - 1) * n..].iter_mut().zip(&acc).zip(key) {
        *o = a ^ k;
    }
    Ok(out)
}

/// Joins what `split` made back into the key (`n` bytes).
pub fn merge(hash: Hash, material: &[u8], n: usize, stripes: usize) -> Vec<u8> {
    let mut acc = vec![0u8; n];
    for s in 0..stripes - 1 {
        for (a, b) in acc.iter_mut().zip(&material[s * n..(s + 1) * n]) {
            *a ^= b;
        }
        diffuse(hash, &mut acc);
    }
    acc.iter()
        .zip(&material[(stripes - 1) * n..stripes * n])
        .map(|(a, b)| a ^ b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_merge_gives_the_key_back() {
        let key: Vec<u8> = (0..64u8).collect();
        // Deterministic "random" stripes, so a failure reproduces.
        let rnd = |b: &mut [u8]| {
            let mut x = 7u8;
            for v in b.iter_mut() {
                x = x.wrapping_mul(31).wrapping_add(17);
                *v = x;
            }
            Ok(())
        };
        for hash in [Hash::Sha1, Hash::Sha256] {
            let m = split(hash, &key, 4000, rnd).unwrap();
            assert_eq!(m.len(), 64 * 4000);
            assert_eq!(merge(hash, &m, 64, 4000), key);
            // Any one stripe changed loses the key.
            let mut broken = m.clone();
            broken[100] ^= 1;
            assert_ne!(merge(hash, &broken, 64, 4000), key);
        }
    }
}
