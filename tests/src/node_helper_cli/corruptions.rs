//! The damage the verify and repair tests inflict on a snapshot, each with the finding the
//! helper must report. Shared so that verify and repair are tested on exactly the same cases.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use snapmend_crds::FindingKind;

use crate::TestError;
use crate::fs_tree::remove_xattr;

/// Which test image a case damages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseImage {
    /// `image_builder::pause_image`.
    Pause,
    /// `image_builder::rich_image`.
    Rich,
}

/// One way to damage one layer's snapshot `fs`.
pub struct Corruption {
    pub name: &'static str,
    pub image: CaseImage,
    pub layer: usize,
    /// The finding that must be reported (path inside the layer).
    pub path: &'static str,
    pub kind: FindingKind,
    /// Other paths findings may name (e.g. the other name of a hardlink pair).
    pub also: &'static [&'static str],
    pub apply: fn(&Path) -> Result<(), TestError>,
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, TestError> {
    r.map_err(|e| TestError::io(path, e))
}

fn delete_pause(fs: &Path) -> Result<(), TestError> {
    let p = fs.join("pause");
    io(&p, std::fs::remove_file(&p))
}

fn truncate_profile(fs: &Path) -> Result<(), TestError> {
    let p = fs.join("home/app/.profile");
    let f = io(&p, std::fs::OpenOptions::new().write(true).open(&p))?;
    io(&p, f.set_len(3))
}

/// Same length, other bytes (and the mtime put back, so only content differs).
fn rewrite_passwd_same_size(fs: &Path) -> Result<(), TestError> {
    let p = fs.join("etc/passwd");
    let before = io(&p, std::fs::symlink_metadata(&p))?;
    let mut bytes = io(&p, std::fs::read(&p))?;
    bytes[0] = if bytes[0] == b'R' { b'r' } else { b'R' };
    io(&p, std::fs::write(&p, &bytes))?;
    let f = io(&p, std::fs::File::options().write(true).open(&p))?;
    io(&p, f.set_modified(io(&p, before.modified())?))
}

fn drop_setuid(fs: &Path) -> Result<(), TestError> {
    let p = fs.join("usr/bin/su-tool");
    io(
        &p,
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)),
    )
}

fn chown_data_to_root(fs: &Path) -> Result<(), TestError> {
    let p = fs.join("home/app/data");
    io(&p, std::os::unix::fs::lchown(&p, Some(0), Some(0)))
}

fn delete_whiteout(fs: &Path) -> Result<(), TestError> {
    let p = fs.join("etc/obsolete");
    io(&p, std::fs::remove_file(&p))
}

fn drop_opaque_xattr(fs: &Path) -> Result<(), TestError> {
    remove_xattr(&fs.join("var/cache"), "trusted.overlay.opaque")
}

fn add_extra_file(fs: &Path) -> Result<(), TestError> {
    let p = fs.join("newdir/intruder");
    io(&p, std::fs::write(&p, b"not from the layer\n"))
}

fn file_becomes_dir(fs: &Path) -> Result<(), TestError> {
    let p = fs.join("etc/passwd");
    io(&p, std::fs::remove_file(&p))?;
    io(&p, std::fs::create_dir(&p))
}

/// Replaces one name of the hardlink pair by an identical copy (separate inode).
fn break_hardlink(fs: &Path) -> Result<(), TestError> {
    let link = fs.join("usr/bin/tool-hardlink");
    let meta = io(&link, std::fs::symlink_metadata(&link))?;
    let tmp = fs.join("usr/bin/.copy");
    io(&tmp, std::fs::copy(&link, &tmp))?;
    io(&tmp, std::fs::set_permissions(&tmp, meta.permissions()))?;
    let f = io(&tmp, std::fs::File::options().write(true).open(&tmp))?;
    io(&tmp, f.set_modified(io(&link, meta.modified())?))?;
    io(&link, std::fs::rename(&tmp, &link))
}

fn retarget_symlink(fs: &Path) -> Result<(), TestError> {
    let p = fs.join("etc/localtime");
    io(&p, std::fs::remove_file(&p))?;
    io(
        &p,
        std::os::unix::fs::symlink("/usr/share/zoneinfo/Europe/Paris", &p),
    )
}

fn change_device_numbers(fs: &Path) -> Result<(), TestError> {
    let p = fs.join("dev/loop9");
    io(&p, std::fs::remove_file(&p))?;
    let out = io(
        &p,
        std::process::Command::new("mknod")
            .arg("-m")
            .arg("660")
            .arg(&p)
            .args(["b", "7", "10"])
            .status(),
    )?;
    if !out.success() {
        return Err(TestError::Build(format!("mknod {} failed", p.display())));
    }
    Ok(())
}

fn change_user_xattr(fs: &Path) -> Result<(), TestError> {
    crate::fs_tree::set_xattr(&fs.join("opt/xattrs"), "user.comment", b"tampered")
}

/// Every corruption the issues list (plus link target, device and xattr changes), each
/// found at one path with one kind.
pub fn corruptions() -> Vec<Corruption> {
    use CaseImage::*;
    use FindingKind::*;
    let case = |name, image, layer, path, kind, apply| Corruption {
        name,
        image,
        layer,
        path,
        kind,
        also: &[],
        apply,
    };
    vec![
        case(
            "deleted_pause",
            Pause,
            0,
            "/pause",
            Missing,
            delete_pause as fn(&Path) -> _,
        ),
        case(
            "truncated_file",
            Rich,
            0,
            "/home/app/.profile",
            SizeMismatch,
            truncate_profile,
        ),
        case(
            "same_size_content_change",
            Rich,
            1,
            "/etc/passwd",
            ContentMismatch,
            rewrite_passwd_same_size,
        ),
        case(
            "mode_change",
            Rich,
            0,
            "/usr/bin/su-tool",
            ModeMismatch,
            drop_setuid,
        ),
        case(
            "owner_change",
            Rich,
            0,
            "/home/app/data",
            OwnerMismatch,
            chown_data_to_root,
        ),
        case(
            "deleted_whiteout",
            Rich,
            1,
            "/etc/obsolete",
            Missing,
            delete_whiteout,
        ),
        case(
            "lost_opaque_xattr",
            Rich,
            1,
            "/var/cache",
            XattrMismatch,
            drop_opaque_xattr,
        ),
        case(
            "extra_file",
            Rich,
            2,
            "/newdir/intruder",
            Extra,
            add_extra_file,
        ),
        case(
            "type_change",
            Rich,
            0,
            "/etc/passwd",
            TypeMismatch,
            file_becomes_dir,
        ),
        Corruption {
            also: &["/usr/bin/tool"],
            ..case(
                "broken_hardlink",
                Rich,
                0,
                "/usr/bin/tool-hardlink",
                HardlinkMismatch,
                break_hardlink,
            )
        },
        case(
            "symlink_target_change",
            Rich,
            0,
            "/etc/localtime",
            LinkTargetMismatch,
            retarget_symlink,
        ),
        case(
            "device_change",
            Rich,
            0,
            "/dev/loop9",
            DeviceMismatch,
            change_device_numbers,
        ),
        case(
            "xattr_change",
            Rich,
            0,
            "/opt/xattrs",
            XattrMismatch,
            change_user_xattr,
        ),
    ]
}

/// The case with this name (tests are generated per case).
pub fn corruption(name: &str) -> Corruption {
    corruptions()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("test bug: no corruption case {name}"))
}

/// Flips one byte in the middle of a blob (the content store keeps blobs read-only; root writes anyway).
pub fn flip_blob_byte(blob: &Path) -> Result<(), TestError> {
    let mut bytes = io(blob, std::fs::read(blob))?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    io(blob, std::fs::write(blob, &bytes))
}

/// Removes everything inside a snapshot's `fs` (keeps `fs` itself).
pub fn empty_dir(fs: &Path) -> Result<(), TestError> {
    for entry in io(fs, std::fs::read_dir(fs))? {
        let path = io(fs, entry)?.path();
        let is_dir = io(&path, std::fs::symlink_metadata(&path))?.is_dir();
        io(
            &path,
            if is_dir {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            },
        )?;
    }
    Ok(())
}
