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

echo
for deb in target/debian/*.deb; do
    [ -e "$deb" ] || continue
    echo "$deb:"
    dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Architecture\|Depends\|Installed-Size\):/  \1:/p'
done
