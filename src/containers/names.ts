// Random container names in Docker's "adjective_surname" style (a shorter word list than
// moby's namesgenerator).
import { randomInt } from 'node:crypto';

const LEFT = [
  'admiring', 'affectionate', 'agitated', 'amazing', 'angry', 'awesome', 'blissful', 'bold', 'brave', 'charming',
  'clever', 'cool', 'compassionate', 'competent', 'confident', 'cranky', 'crazy', 'dazzling', 'determined', 'distracted',
  'dreamy', 'eager', 'ecstatic', 'elastic', 'elated', 'elegant', 'eloquent', 'epic', 'fervent', 'festive',
  'flamboyant', 'focused', 'friendly', 'frosty', 'gallant', 'gifted', 'goofy', 'gracious', 'happy', 'hardcore',
  'heuristic', 'hopeful', 'hungry', 'infallible', 'inspiring', 'jolly', 'jovial', 'keen', 'kind', 'laughing',
  'loving', 'lucid', 'magical', 'modest', 'musing', 'mystifying', 'naughty', 'nervous', 'nice', 'nifty',
  'nostalgic', 'objective', 'optimistic', 'peaceful', 'pedantic', 'pensive', 'practical', 'priceless', 'quirky', 'quizzical',
  'recursing', 'relaxed', 'reverent', 'romantic', 'sad', 'serene', 'sharp', 'silly', 'sleepy', 'stoic',
  'strange', 'stupefied', 'suspicious', 'sweet', 'tender', 'thirsty', 'trusting', 'unruffled', 'upbeat', 'vibrant',
  'vigilant', 'vigorous', 'wizardly', 'wonderful', 'xenodochial', 'youthful', 'zealous', 'zen',
];

const RIGHT = [
  'agnesi', 'albattani', 'allen', 'archimedes', 'babbage', 'banach', 'bardeen', 'bell', 'bhabha', 'booth',
  'bose', 'brahmagupta', 'carson', 'cerf', 'chandrasekhar', 'curie', 'darwin', 'davinci', 'dijkstra', 'einstein',
  'elion', 'euclid', 'euler', 'faraday', 'fermat', 'feynman', 'franklin', 'galileo', 'gauss', 'goldberg',
  'goodall', 'hamilton', 'hawking', 'heisenberg', 'hodgkin', 'hopper', 'hypatia', 'johnson', 'kepler', 'knuth',
  'lamport', 'leakey', 'liskov', 'lovelace', 'mayer', 'mccarthy', 'meitner', 'mendel', 'mirzakhani', 'morse',
  'newton', 'noether', 'pascal', 'pasteur', 'perlman', 'pike', 'poincare', 'ramanujan', 'ritchie', 'rosalind',
  'shannon', 'shockley', 'sinoussi', 'stonebraker', 'swartz', 'tesla', 'thompson', 'torvalds', 'turing', 'wescoff',
  'wiles', 'williams', 'wing', 'wozniak', 'wright', 'yalow', 'yonath',
];

export function randomName(taken: (name: string) => boolean): string {
  for (let i = 0; ; i++) {
    let name = `${LEFT[randomInt(LEFT.length)]}_${RIGHT[randomInt(RIGHT.length)]}`;
    if (i > 5) name += randomInt(10);
    if (!taken(name)) return name;
  }
}

/** Docker's container name rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+ */
export const NAME_RE = /^\/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
