#!/bin/sh
echo "hello from the lamina demo"
