// Markdown to DOM for model output, which is untrusted: every piece of text becomes a text node
// (textContent, createTextNode) inside elements this file creates, so no HTML the model writes is
// ever parsed. Links keep only http(s) addresses. A subset on purpose: fenced code blocks,
// headings, lists, quotes, rules, paragraphs; inline code, bold, italic, links.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const LANG = /^[A-Za-z0-9_+#.-]{1,32}$/;

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

/** The blocks of `text` as a DocumentFragment. An unclosed fence (mid-stream) runs to the end. */
export function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence)) body.push(lines[i++]);
      i += 1; // the closing fence
      const pre = el("pre");
      const code = el("code");
      if (LANG.test(m[2])) {
        code.className = "language-" + m[2];
        pre.dataset.lang = m[2];
      }
      code.textContent = body.join("\n");
      pre.append(code);
      out.append(pre);
    } else if ((m = HEADING.exec(line))) {
      const h = el("h" + m[1].length);
      h.append(renderInline(m[2]));
      out.append(h);
      i += 1;
    } else if (RULE.test(line)) {
      out.append(el("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        inner.push(m[1]);
        i += 1;
      }
      const quote = el("blockquote");
      quote.append(renderMarkdown(inner.join("\n")));
      out.append(quote);
    } else if ((m = ITEM.exec(line))) {
      const ordered = /\d/.test(m[2]);
      const list = el(ordered ? "ol" : "ul");
      if (ordered && parseInt(m[2], 10) !== 1) list.start = parseInt(m[2], 10);
      while (i < lines.length && (m = ITEM.exec(lines[i])) && /\d/.test(m[2]) === ordered) {
        const parts = [m[3]];
        i += 1;
        // indented lines that follow continue the item
        while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !ITEM.test(lines[i])) {
          parts.push(lines[i].trim());
          i += 1;
        }
        const li = el("li");
        li.append(renderInline(parts.join("\n")));
        list.append(li);
      }
      out.append(list);
    } else if (line.trim() === "") {
      i += 1;
    } else {
      const para = [line];
      i += 1;
      while (i < lines.length && lines[i].trim() !== "" && !startsBlock(lines[i])) para.push(lines[i++]);
      const p = el("p");
      p.append(renderInline(para.join("\n")));
      out.append(p);
    }
  }
  return out;
}

// code spans first, so nothing inside them is read as emphasis or links
const INLINE =
  /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__(?![A-Za-z0-9])|\*(?=[^*\s])([^*]*?[^*\s])\*|(?<![A-Za-z0-9_])_(?=[^_\s])([^_]*?[^_\s])_(?![A-Za-z0-9_])|\[([^\]\n]+)\]\(\s*([^)\s]+)\s*\)/g;

function safeHref(raw) {
  try {
    const url = new URL(raw, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

/** Inline Markdown of one block as a DocumentFragment of text nodes and the elements above. */
export function renderInline(text) {
  const out = document.createDocumentFragment();
  let last = 0;
  const re = new RegExp(INLINE.source, "g"); // its own lastIndex: this function recurses
  for (let m; (m = re.exec(text)); ) {
    if (m.index > last) out.append(document.createTextNode(text.slice(last, m.index)));
    last = re.lastIndex;
    let node;
    if (m[2] !== undefined) {
      node = el("code");
      node.textContent = m[2];
    } else if (m[3] !== undefined || m[4] !== undefined) {
      node = el("strong");
      node.append(renderInline(m[3] ?? m[4]));
    } else if (m[5] !== undefined || m[6] !== undefined) {
      node = el("em");
      node.append(renderInline(m[5] ?? m[6]));
    } else {
      const href = safeHref(m[8]);
      if (href === null) {
        node = document.createTextNode(m[0]);
      } else {
        node = el("a");
        node.href = href;
        node.rel = "noopener noreferrer nofollow";
        node.target = "_blank";
        node.append(renderInline(m[7]));
      }
    }
    out.append(node);
  }
  if (last < text.length) out.append(document.createTextNode(text.slice(last)));
  return out;
}
