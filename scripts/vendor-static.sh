#!/usr/bin/env bash
# Refetch the vendored browser libraries from the npm registry (no CDN at run time).
# The files in jiedao/web/static/vendor/ are committed; run this only to check or upgrade them.
#   echarts 6.1.0      dist/echarts.min.js            (Apache-2.0)
#   htmx.org 2.0.11    dist/htmx.min.js               (0BSD)
#   swagger-ui-dist 5.35.0  swagger-ui-bundle.js, swagger-ui.css  (Apache-2.0)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=jiedao/web/static/vendor
ECHARTS=${ECHARTS:-6.1.0}
HTMX=${HTMX:-2.0.11}
SWAGGER=${SWAGGER:-5.35.0}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "echarts@$ECHARTS" "htmx.org@$HTMX" "swagger-ui-dist@$SWAGGER" >/dev/null)
for pkg in "echarts-$ECHARTS" "htmx.org-$HTMX" "swagger-ui-dist-$SWAGGER"; do
  mkdir -p "$WORK/$pkg"
  tar -xzf "$WORK/$pkg.tgz" -C "$WORK/$pkg"
done
mkdir -p "$DEST"
cp "$WORK/echarts-$ECHARTS/package/dist/echarts.min.js" "$DEST/echarts.min.js"
cp "$WORK/echarts-$ECHARTS/package/LICENSE" "$DEST/LICENSE.echarts"
cp "$WORK/htmx.org-$HTMX/package/dist/htmx.min.js" "$DEST/htmx.min.js"
cp "$WORK/htmx.org-$HTMX/package/LICENSE" "$DEST/LICENSE.htmx"
cp "$WORK/swagger-ui-dist-$SWAGGER/package/swagger-ui-bundle.js" "$DEST/swagger-ui-bundle.js"
cp "$WORK/swagger-ui-dist-$SWAGGER/package/swagger-ui.css" "$DEST/swagger-ui.css"
cp "$WORK/swagger-ui-dist-$SWAGGER/package/LICENSE" "$DEST/LICENSE.swagger-ui"
sha256sum "$DEST"/*.js "$DEST"/*.css
echo "vendored: echarts $ECHARTS, htmx.org $HTMX, swagger-ui-dist $SWAGGER → $DEST"
