"""The service's search page: one self-contained HTML document that asks ``/search`` and
``/search/image`` and shows the answers with their thumbnails (no outside resources)."""

SEARCH_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>twobranch search</title>
<link rel="icon" href="data:,">
<style>
body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
form{margin:.5em 0}input[type=text]{width:28em;padding:4px}
#results{display:flex;flex-wrap:wrap;gap:12px;margin-top:1em}
.hit{width:180px;font-size:12px}.hit img{display:block;max-width:160px;max-height:160px}
.caption{color:#555}#error{color:#b00}
</style></head>
<body>
<h1>twobranch search</h1>
<form id="text-form">
  <input type="text" id="q" name="q" placeholder="a dog running on a beach" maxlength="500">
  <label>k <input type="number" id="k" value="10" min="1" max="100" style="width:4em"></label>
  <label>split <input type="text" id="split" value="" style="width:5em"
    placeholder="all"></label>
  <label>dataset <input type="text" id="dataset" value="" style="width:8em"
    placeholder="default"></label>
  <button type="submit">Search</button>
</form>
<form id="image-form">
  <input type="file" id="image" accept="image/*">
  <button type="submit">Captions for an image</button>
</form>
<p id="error"></p>
<div id="results"></div>
<script>
const results = document.getElementById("results");
const errorLine = document.getElementById("error");

function params(extra) {
  const p = new URLSearchParams(extra);
  p.set("k", document.getElementById("k").value || "10");
  for (const name of ["split", "dataset"]) {
    const value = document.getElementById(name).value.trim();
    if (value) p.set(name, value);
  }
  return p;
}

function show(answer) {
  results.replaceChildren();
  errorLine.textContent = answer.warning ? "warning: " + answer.warning : "";
  for (const hit of answer.hits) {
    const card = document.createElement("div");
    card.className = "hit";
    if (hit.thumbnail) {
      const img = document.createElement("img");
      img.src = hit.thumbnail;
      img.alt = hit.image_id;
      card.append(img);
    }
    const head = document.createElement("div");
    head.textContent = hit.rank + ". " + hit.score.toFixed(3) + " " + (hit.image_id || "");
    card.append(head);
    for (const text of hit.captions || [hit.text]) {
      const line = document.createElement("div");
      line.className = "caption";
      line.textContent = text;
      card.append(line);
    }
    results.append(card);
  }
}

async function ask(request) {
  const response = await request;
  const answer = await response.json();
  if (!response.ok) {
    results.replaceChildren();
    errorLine.textContent = answer.error;
    return;
  }
  show(answer);
}

document.getElementById("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = document.getElementById("q").value;
  ask(fetch("/search?" + params({q})));
});

document.getElementById("image-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = document.getElementById("image").files[0];
  if (!file) return;
  const body = new FormData();
  body.append("image", file);
  ask(fetch("/search/image?" + params({}), {method: "POST", body}));
});
</script>
</body></html>
"""
