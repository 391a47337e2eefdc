#!/bin/sh
# Prints, as Markdown, what models/demo/README.md shows: the held-out loss of the base model and of each adapter on
# each domain, measured with `loraserve eval`, and completions of the same prompts under each, from
# `loraserve generate` with the settings `npm start` serves with. Run from anywhere; it uses the sources (tsx), not
# a build. QUANT=int4 (the server's default) or fp32 (default here).
set -e
cd "$(dirname "$0")/../.."
QUANT="${QUANT:-fp32}"
ADAPTERS="python-code legal verse"
DOMAINS="code legal verse"
loraserve() { node --import tsx src/cli/main.ts "$@"; }

echo "Held-out loss (nats/token, \`--quant $QUANT\`):"
echo
printf '| model |'; for d in $DOMAINS; do printf ' %s |' "$d"; done; echo
printf '|---|'; for d in $DOMAINS; do printf -- '---:|'; done; echo
for variant in base $ADAPTERS; do
  printf '| %s |' "$variant"
  for d in $DOMAINS; do
    if [ "$variant" = base ]; then adapter=""; else adapter="--adapter adapters/$variant"; fi
    # shellcheck disable=SC2086
    loss=$(loraserve eval --model models/demo $adapter --text-file "models/demo/heldout/$d.txt" --quant "$QUANT" --json |
      node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>console.log(JSON.parse(s).mean_loss.toFixed(3)))')
    printf ' %s |' "$loss"
  done
  echo
done

echo
echo "Completions (120 tokens, temperature 0.7, top_p 0.9, seed 7, \`--quant $QUANT\`):"
requests=$(mktemp)
trap 'rm -f "$requests"' EXIT
for prompt in 'def ' 'Permission is ' 'The moon '; do
  for adapter in null '"python-code"' '"legal"' '"verse"'; do
    node -e 'console.log(JSON.stringify({prompt: process.argv[1], adapter: JSON.parse(process.argv[2]), max_tokens: 120, temperature: 0.7, top_p: 0.9, seed: 7}))' "$prompt" "$adapter"
  done
done >"$requests"
# --max-lora-rank 16 as serve's default: the slot rank changes the rounding, and so, now and then, a sampled token.
loraserve generate --model models/demo --quant "$QUANT" --max-lora-rank 16 --requests "$requests" \
  --adapter python-code=adapters/python-code --adapter legal=adapters/legal --adapter verse=adapters/verse |
  node -e '
    const fs = require("fs");
    const reqs = fs.readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const outs = fs.readFileSync(0, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    for (const o of outs) {
      const r = reqs[o.index];
      console.log(`\n**${r.adapter ?? "base"}**, prompt \`${JSON.stringify(r.prompt)}\`:\n\n\`\`\`\n${r.prompt}${o.text ?? o.error}\n\`\`\``);
    }' "$requests"
