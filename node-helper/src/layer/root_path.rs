//! continuity's `RootPath`, once: follow every symlink of a path chroot-style (absolute
//! targets and `..` are clamped at the root), the last component included. The model
//! resolves against its own entries, the pass against a lower layer on disk.

use std::collections::VecDeque;

/// Linux's `MAXSYMLINKS` is 40; continuity allows 255, and so does containerd's applier.
pub const MAX_SYMLINKS: usize = 255;

/// More than [`MAX_SYMLINKS`] links were followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymlinkLoop;

/// Resolves `comps` beneath a root; `link_of(p)` gives the target when the resolved
/// relative path `p` is a symlink.
pub fn resolve_root_path<'a>(
    comps: impl IntoIterator<Item = &'a [u8]>,
    mut link_of: impl FnMut(&[u8]) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, SymlinkLoop> {
    let mut resolved: Vec<Vec<u8>> = Vec::new();
    let mut queue: VecDeque<Vec<u8>> = comps.into_iter().map(<[u8]>::to_vec).collect();
    let mut links = 0usize;
    while let Some(c) = queue.pop_front() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        resolved.push(c);
        let Some(target) = link_of(&resolved.join(&b'/')) else {
            continue;
        };
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(SymlinkLoop);
        }
        resolved.pop();
        if target.first() == Some(&b'/') {
            resolved.clear();
        }
        for part in target.split(|&b| b == b'/').rev() {
            queue.push_front(part.to_vec());
        }
    }
    Ok(resolved.join(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(links: &[(&str, &str)], path: &str) -> Result<String, SymlinkLoop> {
        let links: HashMap<Vec<u8>, Vec<u8>> = links
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        resolve_root_path(path.as_bytes().split(|&b| b == b'/'), |p| {
            links.get(p).cloned()
        })
        .map(|r| String::from_utf8(r).unwrap())
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        assert_eq!(resolve(&[], "a/./b//c"), Ok("a/b/c".into()));
        assert_eq!(resolve(&[], "../../a"), Ok("a".into()));
        assert_eq!(
            resolve(&[("lib", "/usr/lib")], "lib/x"),
            Ok("usr/lib/x".into())
        );
        assert_eq!(
            resolve(&[("up", "../../../usr")], "up/lib"),
            Ok("usr/lib".into())
        );
        assert_eq!(resolve(&[("a/l", "../b")], "a/l/c"), Ok("b/c".into()));
        assert_eq!(resolve(&[("last", "target")], "last"), Ok("target".into()));
    }

    #[test]
    fn loops_are_refused_after_the_limit() {
        assert_eq!(resolve(&[("loop", "loop")], "loop/x"), Err(SymlinkLoop));
        assert_eq!(resolve(&[("a", "b"), ("b", "a")], "a"), Err(SymlinkLoop));
        // A chain of exactly MAX_SYMLINKS links resolves.
        let chain: Vec<(String, String)> = (0..MAX_SYMLINKS)
            .map(|i| (format!("l{i}"), format!("l{}", i + 1)))
            .collect();
        let refs: Vec<(&str, &str)> = chain
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(resolve(&refs, "l0"), Ok(format!("l{MAX_SYMLINKS}")));
    }
}
