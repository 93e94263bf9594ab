//! containerd's `config.toml`: the root directory, the CRI sandbox image and the overlayfs
//! snapshotter's `root_path` (containerd-layout.md §7). A missing file means defaults.

use std::path::{Path, PathBuf};

use toml::Value;

use crate::error::{Error, Result};

/// What snapmend needs from config.toml. `None` = not set in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// The file's schema `version` (1.x: 2; 2.x: 3 or 4; absent: legacy 1).
    pub version: Option<i64>,
    pub root: Option<PathBuf>,
    pub sandbox_image: Option<String>,
    pub overlay_root: Option<PathBuf>,
}

const CRI_V1: &str = "io.containerd.grpc.v1.cri";
const CRI_IMAGES_V2: &str = "io.containerd.cri.v1.images";
const OVERLAYFS: &str = "io.containerd.snapshotter.v1.overlayfs";

/// Built-in sandbox images, newest containerd first, for a config without one.
/// 2.x: 2.3 pause:3.10.2, 2.2 pause:3.10.1, 2.0/2.1 pause:3.10. 1.x: 1.7 pause:3.8,
/// 1.6 pause:3.6 (1.6.0 still on k8s.gcr.io).
const DEFAULTS_2X: [&str; 3] = [
    "registry.k8s.io/pause:3.10.2",
    "registry.k8s.io/pause:3.10.1",
    "registry.k8s.io/pause:3.10",
];
const DEFAULTS_1X: [&str; 3] = [
    "registry.k8s.io/pause:3.8",
    "registry.k8s.io/pause:3.6",
    "k8s.gcr.io/pause:3.6",
];

/// The sandbox images containerd would use when the config names none. The file version
/// tells 1.x from 2.x only for version ≥ 3 (a version-2 file is also valid for 2.x, which
/// migrates it), so the caller picks the first candidate the store actually holds.
pub fn default_sandbox_images(version: Option<i64>) -> Vec<&'static str> {
    match version {
        Some(v) if v >= 3 => DEFAULTS_2X.to_vec(),
        _ => DEFAULTS_1X
            .iter()
            .chain(DEFAULTS_2X.iter())
            .copied()
            .collect(),
    }
}

fn lookup<'a>(doc: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, k| v.get(k))
}

impl ContainerdConfig {
    /// Reads `path` and the files it `imports`; a main file that does not exist gives the
    /// defaults.
    pub fn load(path: &Path) -> Result<ContainerdConfig> {
        if !path.exists() {
            tracing::debug!(path = %path.display(), "no containerd config, using defaults");
            return Ok(ContainerdConfig::default());
        }
        let doc = load_with_imports(path)?;
        Self::from_doc(path, &Value::Table(doc))
    }

    /// One file on its own (no imports).
    #[cfg(test)]
    pub fn parse(path: &Path, text: &str) -> Result<ContainerdConfig> {
        Self::from_doc(path, &Value::Table(parse_table(path, text)?))
    }

    fn from_doc(path: &Path, doc: &Value) -> Result<ContainerdConfig> {
        let bad = |reason: String| Error::Config {
            path: path.to_path_buf(),
            reason,
        };
        let string_at = |keys: &[&str]| -> Result<Option<String>> {
            match lookup(doc, keys) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(format!(
                    "{} must be a string, found {}",
                    keys.join("."),
                    other.type_str()
                ))),
            }
        };
        let version = match doc.get("version") {
            None => None,
            Some(Value::Integer(v)) => Some(*v),
            Some(other) => {
                return Err(bad(format!(
                    "version must be an integer, found {}",
                    other.type_str()
                )));
            }
        };
        let (sandbox_paths, overlay_paths): (Vec<&[&str]>, Vec<&[&str]>) = match version {
            Some(v) if v >= 3 => (
                vec![&["plugins", CRI_IMAGES_V2, "pinned_images", "sandbox"]],
                vec![&["plugins", OVERLAYFS, "root_path"]],
            ),
            Some(2) => (
                vec![&["plugins", CRI_V1, "sandbox_image"]],
                vec![&["plugins", OVERLAYFS, "root_path"]],
            ),
            // legacy version 1 uses short plugin ids
            _ => (
                vec![
                    &["plugins", "cri", "sandbox_image"],
                    &["plugins", CRI_V1, "sandbox_image"],
                ],
                vec![
                    &["plugins", "overlayfs", "root_path"],
                    &["plugins", OVERLAYFS, "root_path"],
                ],
            ),
        };
        let first = |paths: &[&[&str]]| -> Result<Option<String>> {
            for p in paths {
                if let Some(s) = string_at(p)? {
                    return Ok(Some(s));
                }
            }
            Ok(None)
        };
        Ok(ContainerdConfig {
            version,
            root: string_at(&["root"])?
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            sandbox_image: first(&sandbox_paths)?.filter(|s| !s.is_empty()),
            overlay_root: first(&overlay_paths)?
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        })
    }

    /// The configured sandbox image, or containerd's built-in candidates for this file version.
    pub fn sandbox_image_candidates(&self) -> Vec<String> {
        match &self.sandbox_image {
            Some(image) => vec![image.clone()],
            None => default_sandbox_images(self.version)
                .into_iter()
                .map(str::to_string)
                .collect(),
        }
    }
}

fn parse_table(path: &Path, text: &str) -> Result<toml::Table> {
    toml::from_str(text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Loads a config and its `imports` like containerd: files are read breadth-first, each merged
/// over what was read before (so imports override the main file), a plugin section from a
/// later file replaces the whole section, relative imports are relative to the importing file,
/// and `*`/`?` patterns in the file name are expanded in lexical order.
pub fn load_with_imports(path: &Path) -> Result<toml::Table> {
    /// containerd configs import a handful of drop-ins; more is a runaway glob.
    const MAX_CONFIG_FILES: usize = 256;
    let mut merged = toml::Table::new();
    let mut pending = vec![path.to_path_buf()];
    let mut seen = std::collections::HashSet::new();
    while !pending.is_empty() {
        let file = pending.remove(0);
        if !seen.insert(file.clone()) {
            continue;
        }
        if seen.len() > MAX_CONFIG_FILES {
            return Err(Error::Config {
                path: path.to_path_buf(),
                reason: format!("imports more than {MAX_CONFIG_FILES} files"),
            });
        }
        let text = super::bounded::read_text_capped(
            &file,
            "containerd config",
            super::bounded::CONFIG_CAP,
        )?;
        let mut table = parse_table(&file, &text)?;
        let imports = match table.remove("imports") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(Error::Config {
                        path: file.clone(),
                        reason: format!("imports must be strings, found {}", other.type_str()),
                    }),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(other) => {
                return Err(Error::Config {
                    path: file.clone(),
                    reason: format!("imports must be an array, found {}", other.type_str()),
                });
            }
        };
        merge_config(&mut merged, table, file == path);
        let base = file.parent().unwrap_or(Path::new("/"));
        for import in imports {
            pending.extend(
                expand_import(base, &import).map_err(|e| Error::io(base.join(&import), e))?,
            );
        }
    }
    Ok(merged)
}

/// Merges `from` over `into`; a later file's `version` does not change the main file's.
fn merge_config(into: &mut toml::Table, from: toml::Table, is_main: bool) {
    for (key, value) in from {
        match (key.as_str(), value) {
            ("version", _) if !is_main => {}
            ("plugins", Value::Table(plugins)) => {
                let target = into
                    .entry("plugins")
                    .or_insert_with(|| Value::Table(toml::Table::new()));
                if let Value::Table(target) = target {
                    target.extend(plugins);
                } else {
                    *target = Value::Table(plugins);
                }
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// The files an `imports` entry names: a plain path as is, a pattern in the file name expanded.
fn expand_import(base: &Path, import: &str) -> std::io::Result<Vec<PathBuf>> {
    let path = base.join(import);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![path]);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| wildcard_match(&name, &e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    found.sort();
    Ok(found)
}

/// `*` (any run) and `?` (one character) matching, as in a shell glob's file-name part.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ContainerdConfig {
        ContainerdConfig::parse(Path::new("/etc/containerd/config.toml"), text).unwrap()
    }

    #[test]
    fn containerd_1x_version_2_file() {
        let c = parse(
            r#"
version = 2
root = "/tmp/ctd/root"
state = "/tmp/ctd/state"
[grpc]
  address = "/tmp/ctd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "example.local/pause:3.9"
[plugins."io.containerd.snapshotter.v1.overlayfs"]
  root_path = "/data/overlay"
"#,
        );
        assert_eq!(c.version, Some(2));
        assert_eq!(c.root.as_deref(), Some(Path::new("/tmp/ctd/root")));
        assert_eq!(c.sandbox_image.as_deref(), Some("example.local/pause:3.9"));
        assert_eq!(c.overlay_root.as_deref(), Some(Path::new("/data/overlay")));
        assert_eq!(
            c.sandbox_image_candidates(),
            vec!["example.local/pause:3.9"]
        );
    }

    #[test]
    fn containerd_2x_version_3_file() {
        let c = parse(
            r#"
version = 3
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "registry.k8s.io/pause:3.10"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "ignored-in-v3"
"#,
        );
        assert_eq!(c.version, Some(3));
        assert_eq!(c.root, None);
        assert_eq!(
            c.sandbox_image.as_deref(),
            Some("registry.k8s.io/pause:3.10")
        );
    }

    #[test]
    fn version_4_reads_like_version_3() {
        let c = parse(
            "version = 4\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\nsandbox = 'x/pause:1'\n",
        );
        assert_eq!(c.sandbox_image.as_deref(), Some("x/pause:1"));
    }

    #[test]
    fn legacy_version_1_file_uses_short_plugin_names() {
        let c = parse(
            "[plugins.cri]\nsandbox_image = \"k8s.gcr.io/pause:3.2\"\n[plugins.overlayfs]\nroot_path = \"/o\"\n",
        );
        assert_eq!(c.version, None);
        assert_eq!(c.sandbox_image.as_deref(), Some("k8s.gcr.io/pause:3.2"));
        assert_eq!(c.overlay_root.as_deref(), Some(Path::new("/o")));
    }

    #[test]
    fn defaults_depend_on_the_file_version() {
        let v3 = parse("version = 3\n");
        assert_eq!(
            v3.sandbox_image_candidates(),
            vec![
                "registry.k8s.io/pause:3.10.2",
                "registry.k8s.io/pause:3.10.1",
                "registry.k8s.io/pause:3.10"
            ]
        );
        let v2 =
            parse("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"\"\n");
        let c2 = v2.sandbox_image_candidates();
        assert_eq!(c2[0], "registry.k8s.io/pause:3.8");
        assert_eq!(c2[1], "registry.k8s.io/pause:3.6");
        assert!(
            c2.contains(&"registry.k8s.io/pause:3.10".to_string()),
            "2.x migrates version-2 files"
        );
    }

    #[test]
    fn a_missing_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = ContainerdConfig::load(&dir.path().join("config.toml")).unwrap();
        assert_eq!(c, ContainerdConfig::default());
        assert_eq!(c.sandbox_image_candidates().len(), 6);
    }

    #[test]
    fn wildcards_match_like_a_glob_file_name() {
        assert!(wildcard_match("*.toml", "10-sandbox.toml"));
        assert!(wildcard_match("*.toml", ".toml"));
        assert!(!wildcard_match("*.toml", "sandbox.toml.bak"));
        assert!(wildcard_match("?0-*.toml", "20-x.toml"));
        assert!(!wildcard_match("?0-*.toml", "200-x.toml"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn imports_override_the_main_file_and_replace_plugin_sections() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            &main,
            "version = 2\nroot = \"/main\"\nimports = [\"conf.d/*.toml\", \"/nonexistent/*.toml\"]\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"main/pause:1\"\n\
             [plugins.\"io.containerd.snapshotter.v1.overlayfs\"]\nroot_path = \"/main-overlay\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("conf.d/10-sandbox.toml"),
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"dropin/pause:2\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("conf.d/20-root.toml"),
            "root = \"/dropin\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("conf.d/ignored.bak"), "root = \"/nope\"\n").unwrap();
        let c = ContainerdConfig::load(&main).unwrap();
        assert_eq!(c.version, Some(2));
        assert_eq!(c.sandbox_image.as_deref(), Some("dropin/pause:2"));
        assert_eq!(c.root.as_deref(), Some(Path::new("/dropin")));
        assert_eq!(
            c.overlay_root.as_deref(),
            Some(Path::new("/main-overlay")),
            "other plugin sections stay"
        );
    }

    #[test]
    fn a_missing_plain_import_is_an_error_and_import_cycles_end() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(&main, "version = 2\nimports = [\"gone.toml\"]\n").unwrap();
        let e = ContainerdConfig::load(&main).unwrap_err().to_string();
        assert!(e.contains("gone.toml"), "{e}");
        std::fs::write(
            &main,
            "version = 2\nimports = [\"config.toml\"]\nroot = \"/r\"\n",
        )
        .unwrap();
        assert_eq!(
            ContainerdConfig::load(&main).unwrap().root.as_deref(),
            Some(Path::new("/r"))
        );
    }

    #[test]
    fn wrong_types_and_bad_toml_are_errors_naming_the_file() {
        let e = ContainerdConfig::parse(Path::new("/c.toml"), "root = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/c.toml") && e.contains("root must be a string"),
            "{e}"
        );
        let e = ContainerdConfig::parse(Path::new("/c.toml"), "version = \"2\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("version must be an integer"), "{e}");
        let e = ContainerdConfig::parse(Path::new("/c.toml"), "[plugins\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/c.toml"), "{e}");
    }
}
