#!/bin/sh
# Says hello from the device it runs on.
echo "hello from ${DEVICE_ID:-an unnamed device} ($(uname -s))"
