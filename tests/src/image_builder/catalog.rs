//! The images the integration tests use. Each function documents what its layers hold, so
//! tests can name paths without reading the builder.

use super::oci_archive::{ImageSpec, ManifestStyle, Platform};
use super::pause_binary::pause_binary;
use super::tar_layer::{Compression, LayerSpec, TarEntry};
use crate::TestError;

/// `security.capability` (VFS_CAP_REVISION_2, effective) granting CAP_NET_BIND_SERVICE.
pub const CAP_NET_BIND_SERVICE_XATTR: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// A file name longer than the 100 bytes of a ustar name field (needs a PAX `path` record).
pub fn long_file_name() -> String {
    format!("opt/{}.txt", "a-rather-long-file-name-".repeat(7))
}

/// The incident's image: Docker schema2 media types, one gzip layer holding only `pause`
/// (a static binary, 0755, root), entrypoint `/pause`.
pub fn pause_image(name: &str) -> Result<ImageSpec, TestError> {
    let pause = pause_binary()?;
    Ok(ImageSpec::new(
        name,
        ManifestStyle::Docker,
        vec![LayerSpec::gzip(vec![
            TarEntry::file("pause", pause).mode(0o755),
        ])],
    ))
}

/// Base layer of [`rich_image`] (gzip): every entry type and attribute the applier handles.
fn rich_base_layer(pause: Vec<u8>) -> LayerSpec {
    LayerSpec::gzip(vec![
        TarEntry::file("pause", pause).mode(0o755),
        TarEntry::symlink("bin", "usr/bin"),
        TarEntry::dir("etc/"),
        TarEntry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        ),
        TarEntry::file("etc/hostname", "snapmend-test\n"),
        TarEntry::file("etc/obsolete", "hidden by a whiteout in layer 1\n"),
        TarEntry::symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        TarEntry::dir("usr/"),
        TarEntry::dir("usr/bin/"),
        TarEntry::file("usr/bin/tool", "#!/bin/sh\necho tool\n").mode(0o755),
        // Same inode as usr/bin/tool; its header mode wins for both names.
        TarEntry::hardlink("usr/bin/tool-hardlink", "usr/bin/tool").mode(0o700),
        TarEntry::file("usr/bin/su-tool", "setuid\n").mode(0o4755),
        TarEntry::file("usr/bin/sg-tool", "setgid\n")
            .mode(0o2755)
            .owner(0, 50),
        TarEntry::file("usr/bin/cap-tool", "capabilities\n")
            .mode(0o755)
            .xattr("security.capability", CAP_NET_BIND_SERVICE_XATTR),
        TarEntry::dir("dev/"),
        TarEntry::char_device("dev/null", 1, 3),
        TarEntry::block_device("dev/loop9", 7, 9),
        TarEntry::dir("run/"),
        TarEntry::fifo("run/initctl").mode(0o600),
        TarEntry::dir("tmp/").mode(0o1777),
        TarEntry::dir("srv/setgid/").mode(0o2775).owner(0, 50),
        TarEntry::dir("home/app/").mode(0o750).owner(1000, 1000),
        TarEntry::file("home/app/data", "app data\n")
            .mode(0o640)
            .owner(1000, 1000),
        TarEntry::file("home/app/.profile", "export A=1\n").owner(1000, 1000),
        TarEntry::dir("opt/"),
        TarEntry::file(long_file_name(), "long name\n"),
        TarEntry::file("opt/naïve-файл-日本.txt", "non-ASCII name\n"),
        TarEntry::file("opt/xattrs", "xattrs\n")
            .xattr("user.comment", "hello")
            .xattr("user.empty", ""),
        TarEntry::dir("opt/pax-dir/").pax_path(),
        TarEntry::dir("var/"),
        TarEntry::dir("var/cache/"),
        TarEntry::file("var/cache/old-a", "stale\n"),
        TarEntry::dir("var/cache/old-b/"),
        TarEntry::file("var/cache/old-b/x", "stale\n"),
        TarEntry::file("empty", ""),
    ])
}

/// Second layer of [`rich_image`] (zstd): a whiteout, an opaque directory, a new opaque
/// directory, a changed file, an implicit parent and a whiteout owned by a non-root user.
fn rich_middle_layer() -> LayerSpec {
    LayerSpec::new(
        Compression::Zstd,
        vec![
            TarEntry::whiteout("etc/obsolete"),
            TarEntry::opaque("var/cache"),
            TarEntry::file("var/cache/new", "fresh\n"),
            TarEntry::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            TarEntry::file("usr/bin/added", "added in layer 1\n").mode(0o755),
            TarEntry::file("srv/implicit/child", "parent dir is implicit\n"),
            TarEntry::whiteout("home/app/data").owner(1000, 1000),
            TarEntry::dir("lib/"),
            TarEntry::opaque("lib"),
            TarEntry::file("lib/libx.so", "not really a library\n").mode(0o755),
        ],
    )
}

/// Top layer of [`rich_image`] (uncompressed): one path written twice (the last wins), a
/// whiteout of a base file, a non-root directory.
fn rich_top_layer() -> LayerSpec {
    LayerSpec::new(
        Compression::None,
        vec![
            TarEntry::file("etc/motd", "first\n"),
            TarEntry::file("etc/motd", "second, longer\n").mode(0o600),
            TarEntry::whiteout("etc/hostname"),
            TarEntry::dir("newdir/").mode(0o700).owner(1000, 1000),
            TarEntry::file("newdir/file", "new\n")
                .owner(1000, 1000)
                .mtime(1_234_567_890),
        ],
    )
}

/// A three-layer OCI image (gzip, zstd, uncompressed) that covers whiteouts, opaque
/// directories, hardlinks (one whose header mode differs), relative and absolute symlinks,
/// devices, a fifo, setuid/setgid/sticky bits, non-root owners, a PAX long name, non-ASCII
/// names and xattrs (`user.*`, `security.capability`). Entrypoint `/pause`.
///
/// Layer 0: `/pause`, `/etc/{passwd,hostname,obsolete,localtime}`, `/usr/bin/{tool,tool-hardlink,
/// su-tool,sg-tool,cap-tool}`, `/dev/{null,loop9}`, `/run/initctl`, `/tmp`, `/srv/setgid`,
/// `/home/app/{data,.profile}`, `/opt/…`, `/var/cache/{old-a,old-b/x}`, `/empty`.
/// Layer 1: whiteout `/etc/obsolete`, opaque `/var/cache` (+`new`), `/etc/passwd`,
/// `/usr/bin/added`, `/srv/implicit/child`, whiteout `/home/app/data`, opaque new `/lib`.
/// Layer 2: `/etc/motd` twice, whiteout `/etc/hostname`, `/newdir/file`.
pub fn rich_image(name: &str) -> Result<ImageSpec, TestError> {
    let pause = pause_binary()?;
    Ok(ImageSpec::new(
        name,
        ManifestStyle::Oci,
        vec![
            rich_base_layer(pause),
            rich_middle_layer(),
            rich_top_layer(),
        ],
    ))
}

/// A small two-layer image whose layers all use one compression.
pub fn compressed_image(name: &str, compression: Compression) -> Result<ImageSpec, TestError> {
    let pause = pause_binary()?;
    Ok(ImageSpec::new(
        name,
        ManifestStyle::Oci,
        vec![
            LayerSpec::new(
                compression,
                vec![
                    TarEntry::file("pause", pause).mode(0o755),
                    TarEntry::dir("data/"),
                ],
            ),
            LayerSpec::new(
                compression,
                vec![TarEntry::file(
                    "data/payload",
                    format!("{compression:?} payload\n").repeat(100),
                )],
            ),
        ],
    ))
}

/// A multi-platform OCI index: this host's manifest (a pause layer) listed after two
/// foreign platforms whose layers differ.
pub fn index_image(name: &str) -> Result<ImageSpec, TestError> {
    let pause = pause_binary()?;
    let mut spec = ImageSpec::new(
        name,
        ManifestStyle::Oci,
        vec![LayerSpec::gzip(vec![
            TarEntry::file("pause", pause).mode(0o755),
            TarEntry::file("platform", "host\n"),
        ])],
    );
    for platform in Platform::foreign() {
        let marker = format!("{}/{}\n", platform.os, platform.architecture);
        spec = spec.with_platform(
            platform,
            vec![LayerSpec::gzip(vec![TarEntry::file("platform", marker)])],
        );
    }
    Ok(spec)
}

/// Two images whose first layer is the same blob (so one snapshot serves both).
pub fn shared_base_images(name_a: &str, name_b: &str) -> Result<[ImageSpec; 2], TestError> {
    let pause = pause_binary()?;
    let base = LayerSpec::gzip(vec![
        TarEntry::file("pause", pause).mode(0o755),
        TarEntry::file("shared", "shared\n"),
    ]);
    Ok([
        ImageSpec::new(
            name_a,
            ManifestStyle::Oci,
            vec![
                base.clone(),
                LayerSpec::gzip(vec![TarEntry::file("a", "a\n")]),
            ],
        ),
        ImageSpec::new(
            name_b,
            ManifestStyle::Oci,
            vec![base, LayerSpec::gzip(vec![TarEntry::file("b", "b\n")])],
        ),
    ])
}

/// A two-layer OCI image with `files` small files in directories of 50 (base layer, gzip),
/// some hardlinks and symlinks among them, and a second layer that whites out and makes
/// opaque parts of the first. Big enough that a repair takes measurable time.
pub fn many_files_image(name: &str, files: usize) -> Result<ImageSpec, TestError> {
    let pause = pause_binary()?;
    let mut base = vec![TarEntry::file("pause", pause).mode(0o755)];
    for i in 0..files {
        let dir = format!("data/d{:04}/", i / 50);
        if i % 50 == 0 {
            base.push(TarEntry::dir(&dir));
        }
        let name = format!("{dir}f{i:06}");
        let previous = |i: usize| format!("data/d{:04}/f{:06}", (i - 1) / 50, i - 1);
        base.push(match i % 17 {
            5 => TarEntry::hardlink(&name, previous(i)),
            9 => TarEntry::symlink(&name, format!("/{}", previous(i))),
            _ => TarEntry::file(&name, format!("file {i}\n").repeat(1 + i % 40))
                .mode(0o600 | (i as u32 % 3) << 3),
        });
    }
    let mut top = vec![
        TarEntry::opaque("data/d0000"),
        TarEntry::file("data/d0000/new", "replaces the dir\n"),
    ];
    top.extend(
        (0..files.min(500))
            .step_by(50)
            .skip(1)
            .map(|i| TarEntry::whiteout(&format!("data/d{:04}/f{i:06}", i / 50))),
    );
    Ok(ImageSpec::new(
        name,
        ManifestStyle::Oci,
        vec![LayerSpec::gzip(base), LayerSpec::gzip(top)],
    ))
}
