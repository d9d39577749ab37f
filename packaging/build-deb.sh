#!/bin/sh
# Builds the Debian package of clsync with cargo-deb: target/debian/clsync_VERSION-1_ARCH.deb
# (and clsync-dbgsym_VERSION-1_ARCH.ddeb with the debug symbols).
#
#   packaging/build-deb.sh [CARGO-DEB-OPTIONS...]     e.g. --fast, --deb-revision 2
#
# Installs cargo-deb first if it is missing (`cargo install --locked cargo-deb@3.8.0`,
# about a minute: the version the package was checked with, see packaging/README.md).
# Needs: cargo, and on the build machine dpkg-dev (dpkg-shlibdeps, for the libc
# dependency) and binutils (strip, objcopy).
set -eu

cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "build-deb.sh: cargo not found (install Rust: https://rustup.rs)" >&2
    exit 1
fi
for tool in dpkg-shlibdeps objcopy; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build-deb.sh: warning: $tool not found (apt-get install dpkg-dev binutils)" >&2
    fi
done

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb.sh: installing cargo-deb" >&2
    cargo install --locked cargo-deb@3.8.0
fi

# Shell completions, printed by the programs themselves (assets target/completions/* in
# Cargo.toml; tests/it/completions.rs tries them in bash, zsh and fish), from the release
# binaries that `cargo deb` packages: built here, or already there with --no-build.
case " $* " in
    *" --no-build "*) ;;
    *) cargo build --release --bins ;;
esac
mkdir -p target/completions
for prog in clsync clsync-manager; do
    for shell in bash zsh fish; do
        case $shell in
            bash) out=target/completions/$prog.bash ;;
            zsh) out=target/completions/_$prog ;;
            fish) out=target/completions/$prog.fish ;;
        esac
        "${CARGO_TARGET_DIR:-target}/release/$prog" completions $shell > "$out.tmp"
        mv "$out.tmp" "$out"
    done
done

cargo deb "$@"

# dpkg --verify and debsums check the installed files against DEBIAN/md5sums, which
# cargo-deb does not write: added here (conffiles left out, as dh_md5sums does: dpkg
# keeps their sums itself), the package rebuilt with the same files, owners (root),
# times (no later than the newest file's, as cargo-deb set them) and compression.
for deb in target/debian/*.deb; do
    [ -e "$deb" ] || continue
    if dpkg-deb --info "$deb" md5sums >/dev/null 2>&1; then
        continue
    fi
    tmp=$(mktemp -d target/debian/md5sums.XXXXXX)
    dpkg-deb --raw-extract "$deb" "$tmp/root"
    touch "$tmp/root/DEBIAN/conffiles"
    (cd "$tmp/root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
        LC_ALL=C sort -z | xargs -0r md5sum) |
        awk 'NR == FNR { sub(/^\//, ""); conf[$0] = 1; next }
             { path = substr($0, 35) } !(path in conf)' "$tmp/root/DEBIAN/conffiles" - \
        > "$tmp/md5sums"
    [ -s "$tmp/root/DEBIAN/conffiles" ] || rm -f "$tmp/root/DEBIAN/conffiles"
    newest=$(find "$tmp/root" -path "$tmp/root/DEBIAN" -prune -o -type f -printf '%T@\n' |
        sort -n | tail -n 1 | cut -d. -f1)
    install -m 0644 "$tmp/md5sums" "$tmp/root/DEBIAN/md5sums"
    comp=$(ar t "$deb" | sed -n 's/^data\.tar\.//p')
    case $comp in
        xz) z=xz ;;
        zst) z=zstd ;;
        gz) z=gzip ;;
        *) z=xz ;;
    esac
    SOURCE_DATE_EPOCH=$newest dpkg-deb --root-owner-group -Z"$z" --build "$tmp/root" "$tmp/new.deb" >/dev/null
    mv "$tmp/new.deb" "$deb"
    rm -rf "$tmp"
done

echo
for deb in target/debian/*.deb; do
    [ -e "$deb" ] || continue
    echo "$deb:"
    dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Architecture\|Depends\|Installed-Size\):/  \1:/p'
done
