#!/bin/sh
# Installs what tools/demo-model/train.py reads (Debian 12): PyTorch and NumPy to train, and the packages
# whose text it trains on. Every other input (/usr/share/common-licenses, the Python standard library, the
# copyright files of required packages) is on any Debian 12 system already.
set -e
apt-get update
apt-get install -y python3-torch python3-numpy python3.11-doc fortunes
