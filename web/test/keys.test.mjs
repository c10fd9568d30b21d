// node --test web/test: what the keys bar sends, and sticky Control and Alt.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyModifiers, controlOf, keySequence } from '../src/keys.js';

test('control characters', () => {
  assert.equal(controlOf('c'), '\x03');
  assert.equal(controlOf('C'), '\x03');
  assert.equal(controlOf('d'), '\x04');
  assert.equal(controlOf('['), '\x1b');
  assert.equal(controlOf(' '), '\x00');
  assert.equal(controlOf('?'), '\x7f');
  assert.equal(controlOf('1'), null);
  assert.equal(controlOf('ab'), null);
});

test('modifiers apply to the next key only as asked', () => {
  assert.equal(applyModifiers('c', false, false), 'c');
  assert.equal(applyModifiers('c', true, false), '\x03');
  assert.equal(applyModifiers('b', false, true), '\x1bb');
  assert.equal(applyModifiers('x', true, true), '\x1b\x18');
  assert.equal(applyModifiers('\x1b[A', true, false), '\x1b[1;5A');
  assert.equal(applyModifiers('\x1bOD', true, false), '\x1b[1;5D');
  assert.equal(applyModifiers('é', true, false), 'é');
});

test('keys follow the cursor mode', () => {
  assert.equal(keySequence('up', false), '\x1b[A');
  assert.equal(keySequence('up', true), '\x1bOA');
  assert.equal(keySequence('left', false), '\x1b[D');
  assert.equal(keySequence('home', false), '\x1b[H');
  assert.equal(keySequence('end', true), '\x1bOF');
  assert.equal(keySequence('pageup', true), '\x1b[5~');
  assert.equal(keySequence('pagedown', false), '\x1b[6~');
  assert.equal(keySequence('escape', false), '\x1b');
  assert.equal(keySequence('tab', false), '\t');
});
