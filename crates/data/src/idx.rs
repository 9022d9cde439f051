//! The IDX format of MNIST and Fashion-MNIST (optionally gzipped): a magic number giving the
//! element type and rank, big-endian u32 dimensions, then the data.

use std::io::Read;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IdxError {
    #[error("not an IDX file: {0}")]
    Format(String),
    #[error("truncated IDX file: the header promises {expected} data bytes, found {found}")]
    Truncated { expected: usize, found: usize },
    #[error("gzip: {0}")]
    Gzip(String),
}

/// An unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parses IDX bytes, gunzipping first when they start with the gzip magic.
pub fn parse(bytes: &[u8]) -> Result<Idx, IdxError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(|e| IdxError::Gzip(e.to_string()))?;
        return parse(&raw);
    }
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(IdxError::Format("bad magic number".into()));
    }
    if bytes[2] != 0x08 {
        return Err(IdxError::Format(format!(
            "element type 0x{:02x} is not unsigned byte (0x08)",
            bytes[2]
        )));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(IdxError::Truncated {
            expected: header,
            found: bytes.len(),
        });
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap_or([0; 4])) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| IdxError::Format("dimensions overflow".into()))?;
    let found = bytes.len() - header;
    if found < expected {
        return Err(IdxError::Truncated { expected, found });
    }
    Ok(Idx {
        dims,
        data: bytes[header..header + expected].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(data);
        v
    }

    #[test]
    fn hand_made_files() {
        let b = idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(
            parse(&b).unwrap(),
            Idx {
                dims: vec![2, 2, 3],
                data: (1..=12).collect()
            }
        );
        let labels = idx(&[3], &[7, 0, 9]);
        assert_eq!(parse(&labels).unwrap().data, [7, 0, 9]);
        // gzip of the same bytes.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &b).unwrap();
        assert_eq!(parse(&gz.finish().unwrap()).unwrap().dims, [2, 2, 3]);
    }

    #[test]
    fn truncated_and_malformed_files() {
        let b = idx(&[2, 2, 3], &[1, 2, 3, 4, 5]);
        assert_eq!(
            parse(&b),
            Err(IdxError::Truncated {
                expected: 12,
                found: 5
            })
        );
        assert!(matches!(parse(&b[..6]), Err(IdxError::Truncated { .. })));
        assert!(matches!(
            parse(&[0, 0, 0x0D, 1, 0, 0, 0, 1, 0]),
            Err(IdxError::Format(_))
        ));
        assert!(matches!(parse(b"PK\x03\x04"), Err(IdxError::Format(_))));
        assert!(matches!(
            parse(&[0x1f, 0x8b, 1, 2, 3]),
            Err(IdxError::Gzip(_))
        ));
    }
}
