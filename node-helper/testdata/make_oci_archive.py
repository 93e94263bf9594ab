#!/usr/bin/env python3
"""Writes a tiny OCI image-layout tarball for the bolt/store fixtures (see README.md).

Images (all layers hand-made, deterministic):
  snapmend.test/pause:schema2  Docker schema2 manifest, one gzip layer holding /pause
  snapmend.test/multi:1        OCI index: linux/amd64 (2 layers: gzip + plain tar) and
                               linux/arm64 (1 layer; its blobs are included too)
Usage: make_oci_archive.py OUT.tar
"""
import gzip, hashlib, io, json, sys, tarfile


def tar_bytes(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, mode
                t.addfile(info)
            else:
                info.size, info.mode = len(data), mode
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


blobs = {}


def add(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[d] = data
    return {"digest": d, "size": len(data)}


def gz(data):
    return gzip.compress(data, mtime=0)


def image(layers, arch, mt_manifest, mt_config, mt_gzip, mt_tar):
    descs, diff_ids = [], []
    for files, compress in layers:
        raw = tar_bytes(files)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        d = add(gz(raw) if compress else raw)
        d["mediaType"] = mt_gzip if compress else mt_tar
        descs.append(d)
    config = json.dumps({"architecture": arch, "os": "linux",
                         "config": {"Entrypoint": ["/pause"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    c = add(config)
    c["mediaType"] = mt_config
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt_manifest,
                           "config": c, "layers": descs}).encode()
    m = add(manifest)
    m["mediaType"] = mt_manifest
    return m


OCI = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json",
       "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar")
DOCKER = ("application/vnd.docker.distribution.manifest.v2+json",
          "application/vnd.docker.container.image.v1+json",
          "application/vnd.docker.image.rootfs.diff.tar.gzip",
          "application/vnd.docker.image.rootfs.diff.tar")

pause = image([([("pause", b"\x7fELF pause stand-in\n" * 40, 0o755)], True)], "amd64", *DOCKER)
pause["annotations"] = {"io.containerd.image.name": "snapmend.test/pause:schema2"}

amd64 = image([([("etc", None, 0o755), ("etc/hostname", b"snapmend\n", 0o644)], True),
               ([("etc/motd", b"layer two\n", 0o600), ("bin", None, 0o755)], False)], "amd64", *OCI)
amd64["platform"] = {"architecture": "amd64", "os": "linux"}
arm64 = image([([("arm", b"arm64 only\n", 0o644)], True)], "arm64", *OCI)
arm64["platform"] = {"architecture": "arm64", "os": "linux", "variant": "v8"}
index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [arm64, amd64]}).encode()
multi = add(index)
multi["mediaType"] = "application/vnd.oci.image.index.v1+json"
multi["annotations"] = {"io.containerd.image.name": "snapmend.test/multi:1"}

layout = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
          "index.json": json.dumps({"schemaVersion": 2, "manifests": [pause, multi]}).encode()}
with tarfile.open(sys.argv[1], "w") as out:
    for name, data in list(layout.items()) + [("blobs/sha256/" + d[7:], b) for d, b in blobs.items()]:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
