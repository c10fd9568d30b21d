// What the keys bar sends, and the sticky Control and Alt applied to the next key.

/** Escape sequences of the bar's keys; the cursor keys follow the terminal's cursor mode. */
export function keySequence(name, applicationCursor) {
  const csi = applicationCursor ? '\x1bO' : '\x1b[';
  switch (name) {
    case 'escape': return '\x1b';
    case 'tab': return '\t';
    case 'up': return csi + 'A';
    case 'down': return csi + 'B';
    case 'right': return csi + 'C';
    case 'left': return csi + 'D';
    case 'home': return csi + 'H';
    case 'end': return csi + 'F';
    case 'pageup': return '\x1b[5~';
    case 'pagedown': return '\x1b[6~';
    default: return '';
  }
}

/** The control character of one typed character (Control-C is \x03), or null. */
export function controlOf(ch) {
  if (ch.length !== 1) return null;
  const code = ch.charCodeAt(0);
  if (ch === ' ' || ch === '@' || ch === '2') return '\x00';
  if (ch === '?') return '\x7f';
  if (code >= 0x61 && code <= 0x7a) return String.fromCharCode(code - 0x60); // a-z
  if (code >= 0x40 && code <= 0x5f) return String.fromCharCode(code - 0x40); // A-Z [ \ ] ^ _
  return null;
}

/** Control (and Alt) applied to what the terminal produced for one key press. */
export function applyModifiers(data, ctrl, alt) {
  let out = data;
  if (ctrl) {
    const csi = /^\x1b([[O])([A-H])$/.exec(out);
    if (csi) out = `\x1b[1;5${csi[2]}`; // Control-arrow, as xterm sends it
    else out = controlOf(out) ?? out;
  }
  if (alt) out = '\x1b' + out;
  return out;
}
