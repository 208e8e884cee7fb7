// Typeset the formulas that pymdownx.arithmatex marked (class "arithmatex", \( \) and \[ \]
// delimiters) with the KaTeX copy shipped beside this file: no network.
function renderFormulas() {
  for (const element of document.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
    });
  }
}

// the theme's instant navigation swaps pages without a load event; document$ announces each page
if (typeof document$ !== "undefined") {
  document$.subscribe(renderFormulas);
} else {
  document.addEventListener("DOMContentLoaded", renderFormulas);
}
