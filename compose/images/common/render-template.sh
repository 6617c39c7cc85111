#!/bin/bash
# Fills in one of deploy/'s `{{placeholder}}` templates, the way parley-sim does:
#   render-template TEMPLATE OUTPUT key=value...
# A placeholder left without a value is an error, so a template and the entrypoint that
# renders it cannot silently drift apart.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: render-template TEMPLATE OUTPUT key=value..." >&2
    exit 2
fi
template=$1
output=$2
shift 2

content=$(<"${template}")
for assignment in "$@"; do
    key=${assignment%%=*}
    value=${assignment#*=}
    # Quoted, the replacement is literal (bash 5.2 would otherwise expand `&` in it).
    content=${content//"{{${key}}}"/"${value}"}
done
if [[ ${content} == *"{{"* ]]; then
    leftover=${content#*\{\{}
    echo "render-template: no value for {{${leftover%%\}\}*}}} in ${template}" >&2
    exit 1
fi
printf '%s\n' "${content}" >"${output}"
