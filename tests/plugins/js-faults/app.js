// A JavaScript plugin that exhausts its memory on demand, to show that the
// host contains a JavaScript plugin's faults like any other's.
//
// Configuration: `{"allocate_on": "<word>"}`. `init` registers
// `check-event-for-spam`, which, for a message whose body contains the
// word, keeps allocating 1 MiB buffers (each written to) until the memory
// cap stops it; any other event is `not-spam`. Built by
// tests/tests/plugin_languages.rs with componentize-js against the world
// `spam-checker-plugin`.

let trigger = '';

export const lifecycle = {
  init(config) {
    trigger = JSON.parse(config).allocate_on ?? '';
    if (!trigger) throw '`allocate_on` is required';
    return ['check-event-for-spam'];
  },
};

const NOT_SPAM = { tag: 'not-spam' };

export const spamChecker = {
  checkEventForSpam(event) {
    if ((JSON.parse(event.content).body ?? '').includes(trigger)) {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
    }
    return NOT_SPAM;
  },
  // Only the registered callback is ever called.
  userMayJoinRoom: () => NOT_SPAM,
  userMayInvite: () => NOT_SPAM,
  userMaySendThreepidInvite: () => NOT_SPAM,
  userMayCreateRoom: () => NOT_SPAM,
  userMayCreateRoomAlias: () => NOT_SPAM,
  userMayPublishRoom: () => NOT_SPAM,
  checkUsernameForSpam: () => false,
  checkRegistrationForSpam: () => ({ tag: 'allow' }),
  checkMediaFileForSpam: () => NOT_SPAM,
  shouldDropFederatedEvent: () => false,
};
