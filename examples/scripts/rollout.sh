#!/bin/sh
# A staged rollout step: takes a few seconds per device (2 to 11, by its id), and refuses on devices whose disk
# is "full" (every 16th device-N), for trying `longrun watch` on a fleet (LONGRUN_FLEET_SIZE=50 make run).
n=$(printf '%s' "$DEVICE_ID" | cksum | cut -d' ' -f1)
seconds=$((2 + n % 10))
echo "$DEVICE_ID: applying update (${seconds}s)"
sleep "$seconds"
case "$DEVICE_ID" in
  device-16|device-32|device-48)
    echo "$DEVICE_ID: /var is full (100%), cannot unpack the update" >&2
    exit 28 ;;
esac
echo "$DEVICE_ID: updated"
