// rlhfkit label: keyboard shortcuts on the pairwise scale (1–7 pick a step, Enter submits).
// The pages work without it; it only saves the mouse trips.
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (target instanceof HTMLInputElement && target.type !== "radio") return;
  if (target instanceof HTMLTextAreaElement) return;
  const steps = document.querySelectorAll("fieldset.scale input[type=radio]");
  const n = Number(event.key);
  if (steps.length && n >= 1 && n <= steps.length) {
    steps[n - 1].checked = true;
    event.preventDefault();
  }
});
