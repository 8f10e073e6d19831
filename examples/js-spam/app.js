// A Myelin spam checker in JavaScript, built with componentize-js.
//
// Configuration (the `config:` of its `modules:` entry):
//
//     banned_words: [viagra, "free crypto"]   # messages containing one are refused
//     blocked_invitees: ["@spam*:example.org"] # invites to these users are refused
//
// Words match case-insensitively anywhere in an `m.room.message` body;
// user IDs match exactly, `*` standing for any run of characters.
//
// Build (from the repository root):
//
//     npx componentize-js examples/js-spam/app.js --wit wit -n spam-checker-plugin \
//         -d http fetch-event -o js_spam.wasm

import { log } from 'myelin:plugin/host@0.1.0';

// Set by `init`. Each instance has its own memory and gets its own `init`,
// so module variables are the plugin's configuration.
let bannedWords = [];
let blockedInvitees = [];

const NOT_SPAM = { tag: 'not-spam' };

function reject(message) {
  return { tag: 'reject', val: { errcode: 'M_FORBIDDEN', message } };
}

function stringList(config, key) {
  const value = config[key] ?? [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    // Thrown from a function returning `result<_, string>`: its `err` case.
    throw `\`${key}\` must be a list of strings`;
  }
  return value;
}

// Whether `value` matches `pattern`, where `*` is any run of characters.
function matches(pattern, value) {
  const parts = pattern.split('*');
  if (parts.length === 1) return value === pattern;
  const first = parts[0];
  const last = parts[parts.length - 1];
  if (!value.startsWith(first) || !value.endsWith(last)) return false;
  let position = first.length;
  const end = value.length - last.length;
  for (const part of parts.slice(1, -1)) {
    const found = value.indexOf(part, position);
    if (found < 0 || found + part.length > end) return false;
    position = found + part.length;
  }
  return position <= end;
}

export const lifecycle = {
  init(config) {
    let parsed;
    try {
      parsed = JSON.parse(config);
    } catch (err) {
      throw `the configuration is not JSON: ${err.message}`;
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw 'the configuration must be a mapping';
    }
    bannedWords = stringList(parsed, 'banned_words').map((w) => w.toLowerCase());
    blockedInvitees = stringList(parsed, 'blocked_invitees');
    return ['check-event-for-spam', 'user-may-invite'];
  },
};

export const spamChecker = {
  checkEventForSpam(event) {
    if (event.eventType !== 'm.room.message') return NOT_SPAM;
    const body = JSON.parse(event.content).body;
    if (typeof body !== 'string') return NOT_SPAM;
    const lowered = body.toLowerCase();
    for (const word of bannedWords) {
      if (lowered.includes(word)) {
        log('info', `refused ${event.eventId} from ${event.sender}: ${JSON.stringify(word)}`);
        return reject(`messages may not contain ${JSON.stringify(word)}`);
      }
    }
    return NOT_SPAM;
  },

  userMayInvite(inviter, invitee, _roomId) {
    if (blockedInvitees.some((pattern) => matches(pattern, invitee))) {
      log('info', `refused ${inviter}'s invite of ${invitee}`);
      return reject(`${invitee} may not be invited`);
    }
    return NOT_SPAM;
  },

  // The world has every spam-checker callback; `init` registered only the
  // two above, so the host never calls these.
  userMayJoinRoom: () => NOT_SPAM,
  userMaySendThreepidInvite: () => NOT_SPAM,
  userMayCreateRoom: () => NOT_SPAM,
  userMayCreateRoomAlias: () => NOT_SPAM,
  userMayPublishRoom: () => NOT_SPAM,
  checkUsernameForSpam: () => false,
  checkRegistrationForSpam: () => ({ tag: 'allow' }),
  checkMediaFileForSpam: () => NOT_SPAM,
  shouldDropFederatedEvent: () => false,
};
