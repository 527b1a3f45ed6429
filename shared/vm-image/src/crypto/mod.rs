//! Disk encryption as QEMU stores it: LUKS1 headers (qcow2
//! `encrypt.format=luks` and the `luks` format), their key slots, and
//! AES-XTS with plain64 IVs over 512-byte sectors.
//!
//! A header is hostile input like any other: every field is checked
//! before use, key material must lie inside the header area, and the
//! PBKDF2 iteration counts a file can ask for are capped, so opening an
//! image cannot be made to spin for hours.

pub mod af;
pub mod luks;
mod reader;

pub use reader::EncryptedImage;

use std::io;
use std::time::{Duration, Instant};

use aes::cipher::KeyInit;
use aes::{Aes128, Aes256};
use sha2::Digest;
use xts_mode::{get_tweak_default, Xts128};

/// The sector the IVs count (LUKS1's, whatever the image's own).
pub const SECTOR: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("Invalid password, cannot unlock any keyslot")]
    BadPassword,
    #[error("LUKS header: {0}")]
    Header(String),
    #[error("{0}")]
    Unsupported(String),
}

/// The hashes LUKS1 headers name that we take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "sha1" => Ok(Self::Sha1),
            "sha256" => Ok(Self::Sha256),
            other => Err(Error::Unsupported(format!(
                "hash algorithm '{other}' is not supported (sha256, sha1)"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
        }
    }
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }
    pub fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
        match self {
            Self::Sha1 => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, out),
            Self::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, out),
        }
    }

    /// PBKDF2 iterations that take about `ms` milliseconds here (wall
    /// clock, timed on a run long enough to mean something), at least
    /// `min`.
    pub fn iterations_for(self, ms: u64, min: u32) -> u32 {
        let mut n: u32 = 1 << 10;
        let mut out = [0u8; 32];
        loop {
            let t0 = Instant::now();
            self.pbkdf2(b"benchmark", &[0u8; 32], n, &mut out);
            let took = t0.elapsed();
            if took >= Duration::from_millis(50) || n >= 1 << 26 {
                let per_ms = f64::from(n) / took.as_secs_f64().max(1e-6) / 1000.0;
                let want = (per_ms * ms as f64).min(f64::from(u32::MAX));
                return (want as u32).max(min);
            }
            n *= 2;
        }
    }
}

/// Fills `buf` from the kernel's random generator.
pub fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: getrandom writes at most the length we pass into the
        // buffer we pass, which is ours and that long.
        let r = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += r as usize;
    }
    Ok(())
}

/// AES-XTS with plain64 IVs (the tweak is the sector's number), and the
/// AES-128-CBC of QEMU's old qcow2 encryption (the IV is the sector's
/// number too), which is only ever decrypted here.
pub enum Cipher {
    Aes128(Box<Xts128<Aes128>>),
    Aes256(Box<Xts128<Aes256>>),
    Aes128Cbc(Box<Aes128>),
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Aes128(_) => "Cipher(aes-128-xts-plain64)",
            Self::Aes256(_) => "Cipher(aes-256-xts-plain64)",
            Self::Aes128Cbc(_) => "Cipher(aes-128-cbc-plain64)",
        })
    }
}

impl Cipher {
    /// An XTS key is two AES keys: 32 bytes for AES-128, 64 for AES-256.
    pub fn xts(key: &[u8]) -> Result<Self, Error> {
        let half = key.len() / 2;
        let (a, b) = key.split_at(half);
        match key.len() {
            32 => Ok(Self::Aes128(Box::new(Xts128::new(
                Aes128::new_from_slice(a).expect("16 bytes"),
                Aes128::new_from_slice(b).expect("16 bytes"),
            )))),
            64 => Ok(Self::Aes256(Box::new(Xts128::new(
                Aes256::new_from_slice(a).expect("32 bytes"),
                Aes256::new_from_slice(b).expect("32 bytes"),
            )))),
            n => Err(Error::Unsupported(format!(
                "an XTS key of {n} bytes (32 or 64 are taken)"
            ))),
        }
    }

    /// QEMU's old qcow2 AES key: the password's first 16 bytes, zeroes
    /// after a shorter one (no key derivation at all: one reason the
    /// format is deprecated).
    pub fn qcow_aes(password: &[u8]) -> Self {
        let mut key = [0u8; 16];
        let n = password.len().min(16);
        key[..n].copy_from_slice(&password[..n]);
        Self::Aes128Cbc(Box::new(Aes128::new(&key.into())))
    }

    /// Encrypts whole sectors in place, the first numbered `sector`
    /// (XTS only: CBC images are not written).
    pub fn encrypt(&self, buf: &mut [u8], sector: u64) {
        debug_assert!(buf.len() % SECTOR == 0);
        match self {
            Self::Aes128Cbc(_) => unreachable!("AES-CBC images are only read"),
            Self::Aes128(x) => x.encrypt_area(buf, SECTOR, u128::from(sector), get_tweak_default),
            Self::Aes256(x) => x.encrypt_area(buf, SECTOR, u128::from(sector), get_tweak_default),
        }
    }

    /// Decrypts whole sectors in place, the first numbered `sector`.
    pub fn decrypt(&self, buf: &mut [u8], sector: u64) {
        debug_assert!(buf.len() % SECTOR == 0);
        match self {
            Self::Aes128Cbc(aes) => {
                use aes::cipher::BlockDecrypt;
                for (i, s) in buf.chunks_exact_mut(SECTOR).enumerate() {
                    // plain64: the sector number, little-endian, in 16 bytes.
                    let mut prev = [0u8; 16];
                    prev[..8].copy_from_slice(&(sector + i as u64).to_le_bytes());
                    for block in s.chunks_exact_mut(16) {
                        let cipher: [u8; 16] = (&*block).try_into().expect("16 bytes");
                        aes.decrypt_block(block.into());
                        for (b, p) in block.iter_mut().zip(prev) {
                            *b ^= p;
                        }
                        prev = cipher;
                    }
                }
            }
            Self::Aes128(x) => x.decrypt_area(buf, SECTOR, u128::from(sector), get_tweak_default),
            Self::Aes256(x) => x.decrypt_area(buf, SECTOR, u128::from(sector), get_tweak_default),
        }
    }
}
