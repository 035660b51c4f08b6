#!/usr/bin/env bash
# Renders the app and tray icons in icons/ from their SVG sources (icons/app-icon.svg,
# icons/tray-template.svg) into every file Tauri's bundler and the tray expect.
# Needs Debian's librsvg2-bin (rsvg-convert), imagemagick (ICO) and icnsutils (png2icns);
# scripts/install-app-deps.sh installs them when they are missing.
set -euo pipefail

"$(dirname "$0")/install-app-deps.sh" icons
cd "$(dirname "$0")/../icons"

# Debian names ImageMagick 6's binary convert-im6.q16; `convert` may be shadowed on PATH.
if command -v magick >/dev/null; then im=(magick); else im=(convert-im6.q16); fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

app() { rsvg-convert --width "$1" --height "$1" app-icon.svg --output "$2"; }

# The sizes tauri.conf.json lists under bundle.icon.
app 32 32x32.png
app 128 128x128.png
app 256 128x128@2x.png
app 512 icon.png

# macOS .icns: png2icns takes one PNG per size it knows.
for size in 16 32 128 256 512 1024; do app "$size" "$work/icns-$size.png"; done
png2icns icon.icns "$work"/icns-{16,32,128,256,512,1024}.png >/dev/null

# Windows .ico, for completeness of the bundle config.
for size in 16 24 32 48 64 256; do app "$size" "$work/ico-$size.png"; done
"${im[@]}" "$work"/ico-{16,24,32,48,64,256}.png icon.ico

# Menu-bar template: black on transparent; macOS tints it for light and dark. 18 pt high, the
# height tray-icon draws it at (tray-icon-0.24.2/src/platform_impl/macos/mod.rs:296-304), so
# the @2x file is shown pixel for pixel on a Retina display.
rsvg-convert --width 18 --height 18 tray-template.svg --output tray-template.png
rsvg-convert --width 36 --height 36 tray-template.svg --output tray-template@2x.png

echo "render-icons: wrote $(ls -1 ./*.png ./*.icns ./*.ico | wc -l) files in icons/"
