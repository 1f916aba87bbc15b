#!/usr/bin/env bash
# The gan task's photographs from two Debian packages, without installing them (their dependencies are
# heavy): `apt-get download` the .deb, extract only the photos into $KDZOO_DATA/photos (default
# ~/.cache/kdzoo/data/photos). Re-running is cheap. zoo.gan.data finds them there.
set -euo pipefail
DEST="${KDZOO_DATA:-$HOME/.cache/kdzoo/data}/photos"
mkdir -p "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() {  # package, folder inside the package, destination name, file names...
  local package=$1 inside=$2 name=$3; shift 3
  if [ -f "$DEST/$name/.complete" ]; then return 0; fi
  (cd "$work" && apt-get download -q "$package" >/dev/null 2>&1) || { echo "note: could not download $package" >&2; return 1; }
  mkdir -p "$DEST/$name.partial"
  local members=()
  for f in "$@"; do members+=("./$inside/$f"); done
  dpkg-deb --fsys-tarfile "$work"/"$package"_*.deb | tar -x -C "$work" "${members[@]}"
  for f in "$@"; do cp "$work/$inside/$f" "$DEST/$name.partial/"; done
  touch "$DEST/$name.partial/.complete"
  rm -rf "$DEST/$name" && mv "$DEST/$name.partial" "$DEST/$name"
}
fetch darknet usr/share/darknet/data darknet dog.jpg eagle.jpg giraffe.jpg horses.jpg kite.jpg person.jpg
fetch opencv-doc usr/share/doc/opencv-doc/examples/data opencv-doc aero1.jpg aloeL.jpg apple.jpg baboon.jpg \
  board.jpg building.jpg butterfly.jpg ela_original.jpg fruits.jpg graf1.png home.jpg left.jpg leuvenA.jpg \
  licenseplate_motion.jpg messi5.jpg orange.jpg pca_test1.jpg rubberwhale1.png smarties.png squirrel_cls.jpg
echo "photos in $DEST"
