"""Negative evidence for the semantic router: phrasings of tasks that no built-in agent does.

A router that only knows what its agents do answers every request with the nearest of them, and
"translate this into German" is nearer to summarising text than to anything else. So the router
also indexes `CATEGORIES` of such requests (creative writing, translation, writing code, images,
travel, shopping, personal messages, the web, general knowledge, advice, chit-chat, ...) under
the sentinel type `OUT_OF_SCOPE`. They vote in the nearest-neighbour evidence like any example;
when they outvote every agent type, the task gets "no confident route". The sentinel is never
returned as an agent type and cannot collide with one (agent names are lowercase identifiers).

The phrases were chosen against the built-in agents (`CURATED_FOR`) and measured on
tests/data/routing_dev.jsonl. They never override what another agent type declares:
- the vote is weighted by closeness, exponentially (see `ml.decision`), so an agent type's own
  examples that are closer to a task than these phrases outvote them;
- an agent type outside `CURATED_FOR` claims a whole category as soon as one of its declared
  capabilities or examples is as similar as `CLAIMED_SIMILARITY` to a phrase of it: the category
  leaves the index while that type is registered (`unclaimed`). A translator agent takes over
  "languages" just by declaring translation.

`RoutingPolicy.out_of_scope_examples = False` switches the phrases off altogether.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OUT_OF_SCOPE = "(out of scope)"
CLAIMED_SIMILARITY = 0.55
CURATED_FOR = frozenset({"calculator", "communication", "data_processor", "learning",
                         "monitoring", "text_analysis", "validation"})

CATEGORIES: dict[str, tuple[str, ...]] = {
    "creative_writing": (
        "write a poem about the sea",
        "write a short story for children",
        "compose song lyrics about summer love",
        "write a limerick about a cat",
        "come up with a slogan for our brand",
        "tell me a funny joke",
        "write a speech for my best friend's wedding",
        "invent a fantasy character with a backstory",
        "continue this story for another page",
        "write a rap about pizza",
        "make up a riddle for my kids",
        "write a toast for a retirement party",
        "create a crossword puzzle",
    ),
    "writing_and_editing": (
        "write an essay on the French revolution",
        "draft an email to my boss asking for a day off",
        "write a product description for our new headphones",
        "write a blog post about remote work",
        "proofread this letter for typos",
        "fix the spelling and grammar in this paragraph",
        "rephrase this sentence to sound more professional",
        "make my resume sound more impressive",
        "shorten this text by rewriting it in simpler words",
        "paraphrase this paragraph for me",
        "rewrite this in the style of Shakespeare",
        "turn my bullet points into a polite email",
        "write a catchy headline for this article",
        "make a quiz out of this chapter",
        "write a thank-you note to my teacher",
        "draft a complaint letter to the airline",
        "expand these notes into a full report",
    ),
    "languages": (
        "translate this sentence into Spanish",
        "what does 'bonjour' mean in English",
        "how do you say thank you in Japanese",
        "teach me some basic Italian phrases",
        "correct my French homework",
        "what's the plural of cactus",
        "how do you spell necessary",
    ),
    "programming": (
        "write a Python script that renames files",
        "fix this error in my Java code",
        "write a regular expression for phone numbers",
        "build me a website for my portfolio",
        "write a SQL query to select the top customers",
        "optimise this slow SQL query",
        "refactor this function to be faster",
        "explain what this code does",
        "set up a CI pipeline on GitHub Actions",
        "deploy my app to Kubernetes",
        "write a bash script that backs up my folder",
        "convert this Python 2 code to Python 3",
        "review my pull request",
        "write a Go function that checks whether an email address is valid",
        "write a TypeScript function that formats a date",
    ),
    "it_support": (
        "install Python on my computer",
        "restart the web server",
        "back up the production database",
        "create a new user account in Postgres",
        "crack this password for me",
        "why is my laptop so slow",
        "how much storage is left on my phone",
        "my printer isn't working",
        "reset my wifi router",
        "change my account password",
        "set up a VPN on my laptop",
        "update my graphics card drivers",
        "recover deleted files from my USB stick",
        "reboot the staging servers",
        "roll back the last deployment",
        "scale up the web servers to handle more traffic",
    ),
    "images_audio_video": (
        "draw a picture of a dragon",
        "generate an image of a sunset over mountains",
        "edit this photo to remove the red eyes",
        "crop and resize this picture",
        "make a meme out of this photo",
        "design a poster for the school fair",
        "transcribe this podcast episode",
        "convert this audio file to mp3",
        "add subtitles to my video",
        "compose a piano melody",
        "colourise this old black and white photo",
        "blur the faces in this picture",
        "make a GIF from this clip",
    ),
    "files_and_documents": (
        "make a slide deck for my presentation",
        "merge these two PDF files into one",
        "convert this Word document to PDF",
        "scan this receipt and file it",
        "print this document double-sided",
        "organise my photos into folders by date",
        "zip these files and upload them to Dropbox",
        "make the header row bold in my spreadsheet",
    ),
    "travel": (
        "book a flight to London for next Monday",
        "find a hotel near the beach in Barcelona",
        "reserve a table at a sushi restaurant",
        "rent a car at the airport",
        "get me a taxi to the train station",
        "plan my weekend trip to Paris",
        "check in for my flight",
        "what's the cheapest way to get from Rome to Florence",
        "apply for a tourist visa to India",
        "find a campsite near the lake",
        "how long is the drive from Oslo to Bergen",
        "book train tickets to Vienna",
    ),
    "shopping_and_errands": (
        "order a pizza for delivery",
        "buy me new running shoes",
        "add milk and eggs to my shopping list",
        "track my Amazon package",
        "find the cheapest price for an iPhone",
        "return these shoes to the store",
        "cancel my Netflix subscription",
        "renew my driving licence",
        "buy a birthday present for my niece",
        "order new printer ink",
        "compare these two vacuum cleaners for me",
    ),
    "banking": (
        "pay my phone bill",
        "transfer 200 dollars to my sister",
        "check my bank account balance",
        "buy half a bitcoin",
        "open a savings account for my daughter",
        "dispute a charge on my credit card",
    ),
    "personal_messages": (
        "send an SMS to my friend saying I'm running late",
        "text my mom happy birthday",
        "call my doctor's office",
        "email my professor about the deadline",
        "send a WhatsApp message to the family group",
        "post a photo on Instagram",
        "tweet about our product launch",
        "reply to my unread emails",
        "email the quarterly report to my manager",
        "send a newsletter to all our subscribers",
        "call the customer back about their complaint",
        "unsubscribe me from these marketing emails",
        "invite the team to lunch on Friday",
        "call mum",
        "leave a voicemail for Sam",
        "message my landlord that the rent will be late",
        "post a status update on LinkedIn",
        "text my sister that I'm on my way",
        "send my dad a text saying the train is late",
    ),
    "calendar": (
        "remind me to water the plants tomorrow",
        "set a timer for ten minutes",
        "wake me up at 7am",
        "schedule a call with the client next week",
        "what's on my calendar today",
        "move my dentist appointment to next week",
        "book a meeting room for 2pm",
        "cancel tomorrow's 9am meeting",
        "when is my next free slot",
    ),
    "web": (
        "search Google for vegan restaurants nearby",
        "scrape all the product prices from this website",
        "download every image from this web page",
        "browse to this URL and summarise the news on it",
        "check if this website is down",
        "monitor a competitor's website for price changes",
        "find the official website of the city council",
        "look up reviews of this restaurant online",
        "find PDFs about climate policy online",
        "what's trending on Twitter",
    ),
    "knowledge": (
        "who wrote Pride and Prejudice",
        "what is the tallest building in the world",
        "when did the Second World War end",
        "explain how black holes form",
        "what is the population of Canada",
        "define the word serendipity",
        "how does a car engine work",
        "what's the difference between a virus and bacteria",
        "explain the theory of relativity",
        "prove that there are infinitely many primes",
        "teach me the basics of machine learning",
        "who painted the Mona Lisa",
        "how many moons does Jupiter have",
        "who invented the telephone",
        "which country has the largest area",
    ),
    "news_and_weather": (
        "what's the weather going to be this weekend",
        "will it rain in Berlin today",
        "what's the latest news about the election",
        "who won the football match last night",
        "what time is it in New York",
        "what's the stock price of Tesla right now",
        "what's the exchange rate from euro to dollar today",
        "is there traffic on my way to work",
        "what's the score in the Lakers game",
    ),
    "health_law_money_advice": (
        "what should I eat to lose weight",
        "I have a headache, what medicine should I take",
        "is this rash something to worry about",
        "give me a workout plan for beginners",
        "can my employer fire me for this",
        "help me write my will",
        "which credit card should I get",
        "should I sell my stocks now",
        "is this email a scam?",
        "how much sleep does a teenager need",
        "is it legal to record a phone call",
        "how do I appeal a parking ticket",
    ),
    "home_and_life": (
        "how can I improve my relationship with my partner",
        "recipe for chocolate chip cookies",
        "how do I get my toddler to sleep",
        "how do I fix a leaking tap",
        "when should I plant tomatoes",
        "how do I train my dog to sit",
        "gift ideas for my dad's birthday",
        "prepare me for a job interview at a bank",
        "help me study for my biology exam",
        "turn on the kitchen lights",
        "set the thermostat to 21 degrees",
        "lock the front door",
        "connect my phone to the bluetooth speaker",
        "suggest a vegetarian dinner for four",
        "how do I get red wine out of a carpet",
        "plan a birthday party for a 6 year old",
    ),
    "entertainment": (
        "recommend a movie to watch tonight",
        "play my favourite playlist",
        "suggest a board game for four players",
        "what are some good books about history",
        "let's play trivia",
        "what's a good TV series to binge",
        "find me tickets for the concert on Saturday",
        "tell me a story",
        "what's a good anime to watch",
        "play rock paper scissors with me",
    ),
    "chit_chat": (
        "hey how are you",
        "good evening",
        "thank you so much",
        "who are you",
        "what's your name",
        "can you help me with something",
        "I'm bored",
        "nevermind",
        "ok cool",
        "yes",
        "no thanks",
        "blah blah",
        "jkl;jkl;",
        "aaaaaa",
        "xyz 123",
        "foo bar baz",
        "testing testing",
        "how's it going",
        "are you a robot",
        "sorry",
        "good night",
        "lol",
        "asdfghjkl",
        "help",
    ),
}


def phrases(categories: dict[str, tuple[str, ...]] = CATEGORIES) -> list[tuple[str, str]]:
    """Every (category, phrase), in order."""
    return [(category, phrase) for category, group in categories.items() for phrase in group]


def unclaimed(categories: Sequence[str], phrase_vectors: np.ndarray,
              claiming_vectors: np.ndarray) -> np.ndarray:
    """Which phrases stay in the index, a boolean per phrase: those of categories that no
    claiming text (a unit row each, from agent types outside `CURATED_FOR`) comes as close as
    `CLAIMED_SIMILARITY` to, in any of their phrases. `categories` names each phrase's category."""
    keep = np.ones(len(categories), dtype=bool)
    if len(categories) == 0 or len(claiming_vectors) == 0:
        return keep
    claimed_phrases = (phrase_vectors @ claiming_vectors.T).max(axis=1) >= CLAIMED_SIMILARITY
    claimed = {category for category, hit in zip(categories, claimed_phrases) if hit}
    return np.array([category not in claimed for category in categories], dtype=bool)
