/*!
The kernel's event records, bytes to fields: inotify's `struct inotify_event` and
fanotify's directory-entry info records.

Pure parsing (no fds, no state), so it is tested with hand-made buffers and sits below
the backends that use it.
*/

/// Calls `f(wd, mask, cookie, name)` for each `struct inotify_event` in `buf`.
pub fn inotify_events(buf: &[u8], mut f: impl FnMut(i32, u32, u32, Option<&[u8]>)) {
    const HDR: usize = 16;
    let mut off = 0;
    while off + HDR <= buf.len() {
        let word = |i: usize| {
            let b = &buf[off + i..off + i + 4];
            [b[0], b[1], b[2], b[3]]
        };
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let cookie = u32::from_ne_bytes(word(8));
        let len = u32::from_ne_bytes(word(12)) as usize;
        let end = off + HDR + len;
        if end > buf.len() {
            break;
        }
        let name = (len > 0).then(|| {
            let raw = &buf[off + HDR..end];
            &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())]
        });
        f(wd, mask, cookie, name);
        off = end;
    }
}

/// A parsed directory-entry record of an event.
pub struct Entry<'a> {
    /// fsid + handle type + handle: the cache key.
    pub key: &'a [u8],
    pub fsid: [u8; 8],
    pub handle_type: i32,
    pub handle: &'a [u8],
    /// `None` or "." for the directory itself.
    pub name: Option<&'a [u8]>,
}

pub fn parse_fid(rec: &[u8], with_name: bool) -> Option<Entry<'_>> {
    // header(4) fsid(8) handle_bytes(4) handle_type(4) f_handle[handle_bytes] [name\0]
    if rec.len() < 20 {
        return None;
    }
    let hb = u32::from_ne_bytes(rec[12..16].try_into().ok()?) as usize;
    let handle_type = i32::from_ne_bytes(rec[16..20].try_into().ok()?);
    let end = 20usize.checked_add(hb)?;
    if rec.len() < end {
        return None;
    }
    let name = if with_name {
        let raw = &rec[end..];
        let n = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Some(&raw[..n])
    } else {
        None
    };
    Some(Entry {
        key: &rec[4..end],
        fsid: rec[4..12].try_into().ok()?,
        handle_type,
        handle: &rec[20..end],
        name: name.filter(|n| *n != b"." && !n.is_empty()),
    })
}

pub const META_LEN: usize = std::mem::size_of::<libc::fanotify_event_metadata>();

/// The event bits we pass on: fanotify's values are inotify's (`FAN_MODIFY == IN_MODIFY`,
/// …), `FAN_ONDIR` becomes `IN_ISDIR`.
pub fn in_mask(mask: u64) -> u32 {
    let bits = (mask & 0xfff) as u32;
    if mask & libc::FAN_ONDIR != 0 {
        bits | libc::IN_ISDIR
    } else {
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inotify_records_are_parsed() {
        let mut buf = Vec::new();
        for (wd, mask, cookie, name) in [(1, 2u32, 0u32, &b"ab"[..]), (3, 4, 5, b"")] {
            buf.extend_from_slice(&i32::to_ne_bytes(wd));
            buf.extend_from_slice(&mask.to_ne_bytes());
            buf.extend_from_slice(&cookie.to_ne_bytes());
            let padded = if name.is_empty() { 0 } else { 16 };
            buf.extend_from_slice(&(padded as u32).to_ne_bytes());
            let mut n = name.to_vec();
            n.resize(padded, 0);
            buf.extend_from_slice(&n);
        }
        let mut seen = Vec::new();
        inotify_events(&buf, |wd, mask, cookie, name| {
            seen.push((wd, mask, cookie, name.map(|n| n.to_vec())))
        });
        assert_eq!(seen, [(1, 2, 0, Some(b"ab".to_vec())), (3, 4, 5, None)]);
    }

    #[test]
    fn masks_map_to_inotify_bits() {
        assert_eq!(in_mask(libc::FAN_MODIFY), libc::IN_MODIFY);
        assert_eq!(
            in_mask(libc::FAN_CREATE | libc::FAN_ONDIR),
            libc::IN_CREATE | libc::IN_ISDIR
        );
        assert_eq!(in_mask(libc::FAN_CLOSE_WRITE), libc::IN_CLOSE_WRITE);
        assert_eq!(in_mask(libc::FAN_MOVED_TO), libc::IN_MOVED_TO);
        assert_eq!(in_mask(libc::FAN_DELETE), libc::IN_DELETE);
        assert_eq!(in_mask(libc::FAN_ATTRIB), libc::IN_ATTRIB);
    }
}
