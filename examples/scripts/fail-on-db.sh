#!/bin/sh
# Succeeds everywhere except on devices whose id starts with "db": there it exits 3.
case "$DEVICE_ID" in
  db*) echo "refusing to touch database host $DEVICE_ID" >&2; exit 3 ;;
  *) echo "patched $DEVICE_ID" ;;
esac
