#!/usr/bin/env bash
# Regenerates the committed speech fixtures in tests/data (needs espeak-ng and sox).
set -euo pipefail
out="$(dirname "$0")/../tests/data"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

say() {  # say VOICE NAME TEXT
  espeak-ng -v "$1" -s 150 -w "$tmp/$2.raw.wav" "$3"
  sox "$tmp/$2.raw.wav" -r 16000 -c 1 -b 16 "$tmp/$2.wav"
}

say en-us hello "Hello world. This is a test of the speech recognition service."
say en-us weather "The weather today is sunny with a light breeze from the west."
say en-gb numbers "Please call me back at five five five, one two three four, after lunch."
say en-us+f3 kitchen "She put the kettle on and waited for the water to boil in the kitchen."
say en-us train "The train to Boston leaves from platform nine at half past seven every morning."
say de german "Guten Morgen. Heute ist ein schöner Tag, und wir gehen in den Park spazieren."

# A long recording (> 30 s) with pauses, so VAD yields several chunks.
parts=()
i=0
for line in \
  "Once upon a time there was a small village at the edge of a great forest." \
  "Every morning the baker opened his shop and sold fresh bread to the villagers." \
  "One day a traveler arrived with a map that showed a hidden lake beyond the hills." \
  "The children wanted to see the lake, so they packed some food and followed the traveler." \
  "They walked for many hours until they reached a valley full of tall green trees." \
  "At sunset they finally saw the lake, and the water was as clear as glass." \
  "Everyone agreed that it was the most beautiful place they had ever seen."; do
  espeak-ng -v en-us -s 150 -w "$tmp/l$i.raw.wav" "$line"
  sox "$tmp/l$i.raw.wav" -r 16000 -c 1 -b 16 "$tmp/l$i.wav" pad 0 1.2
  parts+=("$tmp/l$i.wav")
  i=$((i + 1))
done
sox "${parts[@]}" "$tmp/story.wav"

for name in hello weather numbers kitchen train german; do
  cp "$tmp/$name.wav" "$out/$name.wav"
done
sox "$tmp/story.wav" "$out/story.flac"
# Reference texts the clips were spoken from.
cat > "$out/transcripts.json" <<'JSON'
{
  "hello.wav": "Hello world. This is a test of the speech recognition service.",
  "weather.wav": "The weather today is sunny with a light breeze from the west.",
  "numbers.wav": "Please call me back at five five five, one two three four, after lunch.",
  "kitchen.wav": "She put the kettle on and waited for the water to boil in the kitchen.",
  "train.wav": "The train to Boston leaves from platform nine at half past seven every morning.",
  "german.wav": "Guten Morgen. Heute ist ein schöner Tag, und wir gehen in den Park spazieren."
}
JSON
