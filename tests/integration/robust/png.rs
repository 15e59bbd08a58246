//! A minimal PNG writer (stored deflate blocks) so tests can make any header the decoder may
//! meet: palette, 16-bit, grey + alpha, absurd dimensions, bad bit depths, broken CRCs.
#![allow(dead_code)]

pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// zlib stream of stored (uncompressed) deflate blocks.
pub fn zlib_stored(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> =
        if raw.is_empty() { vec![&[][..]] } else { raw.chunks(65535).collect() };
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&adler32(raw).to_be_bytes());
    out
}

pub fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

pub fn ihdr(width: u32, height: u32, depth: u8, color_type: u8) -> Vec<u8> {
    let mut d = width.to_be_bytes().to_vec();
    d.extend_from_slice(&height.to_be_bytes());
    d.extend_from_slice(&[depth, color_type, 0, 0, 0]);
    chunk(b"IHDR", &d)
}

pub const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// A complete PNG. `rows` are the unfiltered scanlines (filter byte 0 is prepended).
pub fn png(
    width: u32,
    height: u32,
    depth: u8,
    color_type: u8,
    rows: &[Vec<u8>],
    plte: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.extend(ihdr(width, height, depth, color_type));
    if let Some(p) = plte {
        out.extend(chunk(b"PLTE", p));
    }
    let mut raw = Vec::new();
    for r in rows {
        raw.push(0);
        raw.extend_from_slice(r);
    }
    out.extend(chunk(b"IDAT", &zlib_stored(&raw)));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// The 16x16 test picture as RGB8: a few flat colours (so it also fits a palette).
pub fn picture() -> Vec<[u8; 3]> {
    const COLOURS: [[u8; 3]; 4] = [[200, 30, 40], [20, 180, 60], [30, 40, 220], [250, 250, 240]];
    (0..16 * 16).map(|i| COLOURS[((i % 16) / 4 + (i / 16) / 8) % 4]).collect()
}

pub fn rgb8() -> Vec<u8> {
    let p = picture();
    let rows: Vec<Vec<u8>> = p.chunks(16).map(|r| r.iter().flatten().copied().collect()).collect();
    png(16, 16, 8, 2, &rows, None)
}

/// The same picture with 16-bit samples `v * 257` (high byte = the 8-bit value).
pub fn rgb16() -> Vec<u8> {
    let p = picture();
    let rows: Vec<Vec<u8>> = p
        .chunks(16)
        .map(|r| r.iter().flatten().flat_map(|&v| (v as u16 * 257).to_be_bytes()).collect())
        .collect();
    png(16, 16, 16, 2, &rows, None)
}

/// The same picture as RGBA16 with a varying alpha (dropped by `convert("RGB")`).
pub fn rgba16() -> Vec<u8> {
    let p = picture();
    let rows: Vec<Vec<u8>> = p
        .chunks(16)
        .enumerate()
        .map(|(y, r)| {
            r.iter()
                .flat_map(|px| {
                    let mut v: Vec<u8> =
                        px.iter().flat_map(|&c| (c as u16 * 257).to_be_bytes()).collect();
                    v.extend_from_slice(&((y as u16) * 4000).to_be_bytes());
                    v
                })
                .collect()
        })
        .collect();
    png(16, 16, 16, 6, &rows, None)
}

/// The same picture as an 8-bit palette image.
pub fn palette() -> Vec<u8> {
    let p = picture();
    let mut pal: Vec<[u8; 3]> = Vec::new();
    let idx: Vec<u8> = p
        .iter()
        .map(|c| match pal.iter().position(|x| x == c) {
            Some(i) => i as u8,
            None => {
                pal.push(*c);
                (pal.len() - 1) as u8
            }
        })
        .collect();
    let rows: Vec<Vec<u8>> = idx.chunks(16).map(<[u8]>::to_vec).collect();
    let flat: Vec<u8> = pal.iter().flatten().copied().collect();
    png(16, 16, 8, 3, &rows, Some(&flat))
}

/// Grey levels of a picture: (grey8 PNG, grey+alpha 8-bit PNG, grey16 PNG) of the same values.
pub fn greys() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let g: Vec<u8> = (0..256).map(|i| (i * 7 % 256) as u8).collect();
    let rows8: Vec<Vec<u8>> = g.chunks(16).map(<[u8]>::to_vec).collect();
    let rows_a: Vec<Vec<u8>> =
        g.chunks(16).map(|r| r.iter().flat_map(|&v| [v, 255 - v]).collect()).collect();
    let rows16: Vec<Vec<u8>> = g
        .chunks(16)
        .map(|r| r.iter().flat_map(|&v| (v as u16 * 257).to_be_bytes()).collect())
        .collect();
    (
        png(16, 16, 8, 0, &rows8, None),
        png(16, 16, 8, 4, &rows_a, None),
        png(16, 16, 16, 0, &rows16, None),
    )
}

/// Only a header claiming `width x height` RGB8 pixels, and one tiny IDAT: a decompression bomb
/// must be refused from the header.
pub fn bomb(width: u32, height: u32) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.extend(ihdr(width, height, 8, 2));
    out.extend(chunk(b"IDAT", &zlib_stored(&[0; 64])));
    out.extend(chunk(b"IEND", &[]));
    out
}
