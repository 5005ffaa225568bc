# Sourced (not run) by scripts/demo.sh and bench/lib.sh: a busybox-static
# image as a hand-written OCI layout tar, with no registry and no image tool.

# busybox_oci_archive WORK IMAGE OUT APPLET… → OUT: one layer (busybox with
# APPLET… linked in /bin, root in /etc/passwd and /etc/group), PATH=/bin and
# /bin/sh as its command, IMAGE as its name for berth-imaged and containerd.
# WORK is a scratch directory for the rootfs, the blobs and the layout.
# BUSYBOX_OCI_CMD (a JSON array, default ["/bin/sh"]) is the image's command.
busybox_oci_archive() {
    local work=$1 image=$2 out=$3
    shift 3
    mkdir -p "$work/rootfs/bin" "$work/rootfs/"{proc,sys,dev,tmp,etc} "$work/layout/blobs/sha256"
    cp /bin/busybox "$work/rootfs/bin/"
    local applet
    for applet in "$@"; do ln -s busybox "$work/rootfs/bin/$applet"; done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$work/rootfs/etc/passwd"
    printf 'root:x:0:\n' >"$work/rootfs/etc/group"
    blob() { # FILE → stores it under its digest, prints "digest size"
        local d
        d=$(sha256sum "$1" | cut -d' ' -f1)
        cp "$1" "$work/layout/blobs/sha256/$d"
        echo "$d $(stat -c%s "$1")"
    }
    local layer layer_size config config_size manifest manifest_size
    tar -C "$work/rootfs" --owner=0 --group=0 -cf "$work/layer.tar" .
    read -r layer layer_size < <(blob "$work/layer.tar")
    printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "${BUSYBOX_OCI_CMD:-[\"/bin/sh\"]}" "$layer" >"$work/config.json"
    read -r config config_size < <(blob "$work/config.json")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
    read -r manifest manifest_size < <(blob "$work/manifest.json")
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
        "$manifest" "$manifest_size" "$image" "$image" >"$work/layout/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
    tar -C "$work/layout" -cf "$out" .
}
