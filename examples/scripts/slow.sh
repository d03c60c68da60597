#!/bin/sh
# Works for a while (SLOW_SECONDS, default 30), printing a line a second: for trying progress and cancel.
seconds=${SLOW_SECONDS:-30}
i=0
while [ "$i" -lt "$seconds" ]; do
  i=$((i + 1))
  echo "$DEVICE_ID: step $i of $seconds"
  sleep 1
done
echo "$DEVICE_ID: done"
