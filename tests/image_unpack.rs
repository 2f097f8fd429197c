//! Layer unpack on the real filesystem (root): whiteout conversion checked through a real overlayfs
//! mount, attributes, and malicious layers of every kind confined or refused.

#[path = "support/store.rs"]
mod store_support;

use rkube::image::unpack::{UnpackError, unpack_tar};
use rkube::sys::openat::lgetxattr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use store_support::{LayerTar, OverlayMount, Sentinel, require_root, tree};
use tar::EntryType;

fn unpack(root: &Path, tar: &[u8]) -> Result<(), UnpackError> {
    std::fs::create_dir_all(root).unwrap();
    unpack_tar(root, tar).map(drop)
}

#[test]
fn whiteouts_and_opaque_dirs_convert_and_mount_with_overlayfs() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    let upper = tmp.path().join("upper");
    unpack(
        &lower,
        &LayerTar::new()
            .dir("a", 0o755)
            .file("a/keep", b"k")
            .file("a/gone", b"g")
            .dir("o", 0o755)
            .file("o/old", b"old")
            .dir("o/sub", 0o755)
            .file("top", b"t")
            .finish(),
    )
    .unwrap();
    unpack(
        &upper,
        &LayerTar::new()
            .file("a/.wh.gone", b"")
            .dir("o", 0o755)
            .file("o/new1", b"before marker")
            .file("o/.wh..wh..opq", b"")
            .file("o/new2", b"after marker")
            .file(".wh.top", b"")
            .file("a/.wh..wh.plnk", b"")
            .finish(),
    )
    .unwrap();

    // The layer directory in overlay format.
    let wh = std::fs::symlink_metadata(upper.join("a/gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "a/gone must be a 0/0 char device");
    assert!(std::fs::symlink_metadata(upper.join("top")).unwrap().file_type().is_char_device());
    assert_eq!(lgetxattr(&upper.join("o"), "trusted.overlay.opaque").unwrap().as_deref(), Some(&b"y"[..]));
    assert_eq!(tree(&upper), ["a", "a/gone", "o", "o/new1", "o/new2", "top"]);

    // The merged view through a real overlayfs mount.
    let mount = OverlayMount::new(&tmp.path().join("merged"), &[upper.clone(), lower.clone()]);
    assert_eq!(tree(&mount.target), ["a", "a/keep", "o", "o/new1", "o/new2"]);
    assert_eq!(std::fs::read(mount.target.join("o/new2")).unwrap(), b"after marker");
    drop(mount);
}

#[test]
fn attributes_ownership_setuid_xattrs_links_and_devices_are_kept() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("l");
    let cap = [1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // cap_net_raw, v2
    unpack(
        &root,
        &LayerTar::new()
            .raw(EntryType::Directory, "d/", "", b"", 0o750, 7, 8, 1_111_111_111)
            .raw(EntryType::Regular, "d/suid", "", b"#!/bin/sh\n", 0o4755, 1234, 5678, 1_222_222_222)
            .pax(&[
                ("SCHILY.xattr.security.capability", &cap),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/x"),
            ])
            .raw(EntryType::Regular, "d/ping", "", b"ping", 0o755, 0, 0, 1_300_000_000)
            .raw(EntryType::Symlink, "d/ln", "suid", b"", 0o777, 42, 43, 1_333_333_333)
            .hardlink("d/hard", "d/suid")
            .device("d/null", EntryType::Char, 1, 3, 0o666)
            .raw(EntryType::Fifo, "d/fifo", "", b"", 0o600, 0, 0, 1_400_000_000)
            .pax(&[("mtime", b"1500000000.25")])
            .file("late/x", b"implicit parent")
            .finish(),
    )
    .unwrap();

    let d = std::fs::metadata(root.join("d")).unwrap();
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o750, 7, 8));
    assert_eq!(d.mtime(), 1_111_111_111, "directory mtime is applied after its children are written");
    let s = std::fs::metadata(root.join("d/suid")).unwrap();
    assert_eq!((s.mode() & 0o7777, s.uid(), s.gid(), s.mtime()), (0o4755, 1234, 5678, 1_222_222_222));
    assert_eq!(std::fs::read(root.join("d/hard")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(std::fs::metadata(root.join("d/hard")).unwrap().ino(), s.ino(), "hardlink shares the inode");
    let ping = root.join("d/ping");
    assert_eq!(lgetxattr(&ping, "security.capability").unwrap().as_deref(), Some(&cap[..]));
    assert_eq!(
        lgetxattr(&ping, "trusted.overlay.redirect").unwrap(),
        None,
        "overlay xattrs from tars are dropped"
    );
    let ln = std::fs::symlink_metadata(root.join("d/ln")).unwrap();
    assert!(ln.file_type().is_symlink());
    assert_eq!((ln.uid(), ln.gid(), ln.mtime()), (42, 43, 1_333_333_333));
    assert_eq!(std::fs::read_link(root.join("d/ln")).unwrap(), Path::new("suid"));
    let null = std::fs::symlink_metadata(root.join("d/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let fifo = std::fs::symlink_metadata(root.join("d/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    let x = std::fs::metadata(root.join("late/x")).unwrap();
    assert_eq!((x.mtime(), x.mtime_nsec()), (1_500_000_000, 250_000_000), "PAX mtime with fraction");
    assert_eq!(std::fs::metadata(root.join("late")).unwrap().permissions().mode() & 0o7777, 0o755);
}

#[test]
fn later_entries_replace_earlier_ones() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("l");
    unpack(
        &root,
        &LayerTar::new()
            .dir("x", 0o755)
            .file("x/inner", b"1")
            .file("x", b"now a file")
            .file("f", b"first")
            .file("f", b"second")
            .symlink("s", "f")
            .dir("s", 0o700)
            .finish(),
    )
    .unwrap();
    assert_eq!(std::fs::read(root.join("x")).unwrap(), b"now a file");
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"second");
    assert!(std::fs::symlink_metadata(root.join("s")).unwrap().is_dir());
}

/// One malicious layer: its entries and whether it must be refused (else it must be confined).
struct Case {
    name: &'static str,
    tar: Vec<u8>,
    refused: bool,
}

#[test]
fn malicious_layers_are_refused_or_confined() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let sentinel = Sentinel::create(outside.join("sentinel"));
    let s = sentinel.path.to_str().unwrap().to_string();
    let out = outside.to_str().unwrap().to_string();
    let up = "../../../../../../../../..";

    let cases = vec![
        Case {
            name: "dotdot path",
            tar: LayerTar::new().file(&format!("{up}{s}"), b"pwn").finish(),
            refused: true,
        },
        Case {
            name: "dotdot inside path",
            tar: LayerTar::new().file("a/../../x", b"pwn").finish(),
            refused: true,
        },
        Case { name: "absolute path", tar: LayerTar::new().file(&s, b"pwn").finish(), refused: false },
        Case {
            name: "absolute symlink parent",
            tar: LayerTar::new().symlink("a", &out).file("a/sentinel", b"pwn").file("a/new", b"pwn").finish(),
            refused: false,
        },
        Case {
            name: "symlink to root as parent",
            tar: LayerTar::new().symlink("a", "/").file(&format!("a{s}"), b"pwn").finish(),
            refused: false,
        },
        Case {
            name: "relative escaping symlink parent",
            tar: LayerTar::new()
                .dir("d", 0o755)
                .symlink("d/up", up)
                .file(&format!("d/up{s}"), b"pwn")
                .finish(),
            refused: false,
        },
        Case {
            name: "write through a final symlink",
            tar: LayerTar::new().symlink("s", &s).file("s", b"pwn").finish(),
            refused: false,
        },
        Case {
            name: "chmod/chown through a symlink (CVE-2021-32760)",
            tar: LayerTar::new()
                .symlink("s", &s)
                .raw(EntryType::Directory, "s", "", b"", 0o777, 1, 1, 1)
                .finish(),
            refused: false,
        },
        Case {
            name: "hardlink to outside by dotdot",
            tar: LayerTar::new().hardlink("h", &format!("{up}{s}")).finish(),
            refused: true,
        },
        Case {
            name: "hardlink to an absolute host path",
            tar: LayerTar::new().hardlink("h", &s).finish(),
            refused: true,
        },
        Case {
            name: "hardlink through a symlinked parent",
            tar: LayerTar::new().symlink("a", &out).hardlink("h", "a/sentinel").finish(),
            refused: true,
        },
        Case {
            name: "hardlink to a symlink then write",
            tar: LayerTar::new().symlink("s", &s).hardlink("h", "s").file("h", b"pwn").finish(),
            refused: false,
        },
        Case {
            name: "whiteout under a symlinked dir",
            tar: LayerTar::new().symlink("d", &out).file("d/.wh.sentinel", b"").finish(),
            refused: false,
        },
        Case {
            name: "whiteout under a symlink to root",
            tar: LayerTar::new().symlink("d", "/").file(&format!("d{out}/.wh.sentinel"), b"").finish(),
            refused: false,
        },
        Case {
            name: "opaque marker under a symlinked dir",
            tar: LayerTar::new().symlink("d", &out).file("d/.wh..wh..opq", b"").finish(),
            refused: false,
        },
        Case {
            name: "root replaced by a symlink (CVE-2021-29136)",
            tar: LayerTar::new().symlink("./", &out).file("sentinel", b"pwn").finish(),
            refused: true,
        },
        Case { name: "whiteout of dotdot", tar: LayerTar::new().file(".wh...", b"").finish(), refused: true },
        Case {
            name: "magic link parent",
            tar: LayerTar::new().symlink("p", "/proc/self/root").file(&format!("p{s}"), b"pwn").finish(),
            refused: false,
        },
    ];

    let before = tree(&outside);
    for (i, case) in cases.iter().enumerate() {
        let root = tmp.path().join(format!("layer{i}"));
        let result = unpack(&root, &case.tar);
        if case.refused {
            assert!(
                matches!(result, Err(UnpackError::Refused { .. })),
                "{}: expected refusal, got {result:?}",
                case.name
            );
        }
        sentinel.assert_untouched(case.name);
        assert_eq!(tree(&outside), before, "{}: files appeared outside the layer", case.name);
        assert!(lgetxattr(&outside, "trusted.overlay.opaque").unwrap().is_none(), "{}", case.name);
        let out_meta = std::fs::metadata(&outside).unwrap();
        assert_eq!(out_meta.uid(), 0, "{}", case.name);
    }

    // Confined cases land inside their own layer.
    let layer = |i: usize| tmp.path().join(format!("layer{i}"));
    assert_eq!(std::fs::read(layer(2).join(s.trim_start_matches('/'))).unwrap(), b"pwn");
    assert_eq!(std::fs::read(layer(4).join(s.trim_start_matches('/'))).unwrap(), b"pwn");
    assert_eq!(std::fs::read(layer(5).join(s.trim_start_matches('/'))).unwrap(), b"pwn");
    assert_eq!(std::fs::read(layer(6).join("s")).unwrap(), b"pwn");
    assert!(std::fs::symlink_metadata(layer(7).join("s")).unwrap().is_dir());
    assert_eq!(std::fs::read(layer(11).join("h")).unwrap(), b"pwn");
    let wh = std::fs::symlink_metadata(layer(13).join(out.trim_start_matches('/')).join("sentinel")).unwrap();
    assert!(wh.file_type().is_char_device());
}

#[test]
fn truncated_tar_is_an_error() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let tar = LayerTar::new().file("big", &vec![7u8; 100_000]).finish();
    let err = unpack(&tmp.path().join("l"), &tar[..50_000]).unwrap_err();
    assert!(matches!(err, UnpackError::Tar(_)), "{err:?}");
}
