// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {Coordinated} from "./Coordinated.sol";
import {NetworkStats} from "./NetworkStats.sol";
import {PHash} from "./PHash.sol";

interface IHeliumDomain {
    function domainSeparator() external view returns (bytes32);
}

/// @title NodeStaking: node stakes, delayed unstaking, evidence-only slashing, kick-outs.
/// @notice Result signatures are EIP-712 signatures in the ONE Helium domain, whose verifyingContract is the
/// TaskLedger: this contract reads the ledger's domain separator (`ledger.domainSeparator()`), so a result
/// signed once is valid for both settlement and slashing. Slashes are sent by the coordinator, either directly
/// (`slash`) or inside `TaskLedger.settle(tasks, slashes)`, which forwards each evidence here; either way the
/// evidence is verified in full by this contract. Slashed stake accrues to `treasuryBalance` and is pushed to
/// the admin-settable `treasury` by `sweepTreasury()` (anyone may call it).
/// A stake stays slashable for the whole unstake delay after `requestUnstake`, and a node with a pending unstake
/// may not join the coordinator (it reads `nodeInfo`), so the delay, which must exceed the longest task plus the
/// settlement window, is what keeps a node from withdrawing before evidence against it lands. Each node is one
/// GPU (one key, one stream per GPU), so NetworkStats counts one GPU per active node.
contract NodeStaking is Coordinated, ReentrancyGuard {
    bytes32 public constant RESULT_TYPEHASH = keccak256("Result(bytes32 taskId,bytes32 resultHash,address node)");
    bytes32 public constant INVALID_ARGS_HASH = keccak256("helium:invalid-args");
    uint8 public constant KIND_GPT = 0;
    uint8 public constant KIND_SD = 1;

    struct Node {
        uint128 stake;
        uint64 unlockAt; // 0: no unstake requested
        uint48 leftAt; // when the stake last went back to the node (withdraw, kick-out); 0: never
        bool slashed;
        bool active; // counted in NetworkStats
    }

    /// @dev One signed result. For SD evidence `phashes` holds the 64-bit pHash of every image and the
    /// result hash is computed here as keccak256(abi.encodePacked(phashes)) (each element padded to 32 bytes);
    /// an SD result with no phashes must be the invalid-args verdict (resultHash == INVALID_ARGS_HASH).
    /// For GPT evidence `phashes` is empty and `resultHash` is the signed hash.
    struct EvidenceResult {
        address node;
        bytes32 resultHash;
        uint64[] phashes;
        bytes32 r;
        bytes32 vs;
    }

    /// @dev results[0] and results[1] agree; results[2] is the slashed node's result.
    struct SlashEvidence {
        bytes32 taskId;
        uint8 kind;
        EvidenceResult[] results;
    }

    NetworkStats public immutable stats;
    address public ledger;
    address public treasury;
    uint256 public treasuryBalance;
    uint256 public minStake;
    uint256 public unstakeDelay;
    uint256 public phashThreshold;
    mapping(address => Node) internal _nodes;

    event Staked(address indexed node, uint256 amount, uint256 total);
    event UnstakeRequested(address indexed node, uint256 unlockAt);
    event Withdrawn(address indexed node, uint256 amount);
    event KickedOut(address indexed node, uint256 amount);
    event Slashed(address indexed node, bytes32 indexed taskId, uint8 kind, uint256 amount);
    event TreasurySwept(address indexed treasury, uint256 amount);
    event SettingChanged(bytes32 indexed name, uint256 value);
    event TreasuryChanged(address indexed treasury);
    event LedgerSet(address indexed ledger);

    error StakeBelowMinimum(uint256 total, uint256 minimum);
    error NodeIsSlashed(address node);
    error NoStake(address node);
    error UnstakeAlreadyRequested(address node);
    error UnstakeNotRequested(address node);
    error UnstakeLocked(address node, uint256 unlockAt);
    error TransferFailed(address to, uint256 amount);
    error NotCoordinator(address caller);
    error LedgerAlreadySet(address ledger);
    error LengthMismatch();
    error NoEvidence(bytes32 taskId, uint256 results);
    error UnknownKind(uint8 kind);
    error DuplicateNode(address node);
    error NotStaked(address node);
    error BadResultSignature(bytes32 taskId, address node);
    error BadPhashes(address node);
    error MajorityDisagrees(bytes32 taskId);
    error SlashedNodeAgrees(bytes32 taskId, address node);
    error InvalidSetting(bytes32 name, uint256 value);

    constructor(
        address admin,
        address coordinator_,
        NetworkStats stats_,
        address treasury_,
        uint256 minStake_,
        uint256 unstakeDelay_
    ) Coordinated(admin, coordinator_) {
        stats = stats_;
        treasury = treasury_;
        minStake = minStake_;
        unstakeDelay = unstakeDelay_;
        phashThreshold = 5;
    }

    // --- nodes --------------------------------------------------------------------------------------

    /// @notice Adds msg.value to the caller's stake; the total must reach `minStake`. Staking again
    /// cancels a pending unstake request.
    function stake() external payable nonReentrant {
        Node storage n = _nodes[msg.sender];
        if (n.slashed) revert NodeIsSlashed(msg.sender);
        uint256 total = uint256(n.stake) + msg.value;
        if (total < minStake || msg.value == 0) revert StakeBelowMinimum(total, minStake);
        n.stake = uint128(total);
        if (n.unlockAt != 0) n.unlockAt = 0;
        _setActive(n, true);
        emit Staked(msg.sender, msg.value, total);
    }

    function requestUnstake() external {
        Node storage n = _nodes[msg.sender];
        if (n.slashed) revert NodeIsSlashed(msg.sender);
        if (n.stake == 0) revert NoStake(msg.sender);
        if (n.unlockAt != 0) revert UnstakeAlreadyRequested(msg.sender);
        uint256 unlockAt = block.timestamp + unstakeDelay;
        n.unlockAt = uint64(unlockAt);
        _setActive(n, false);
        emit UnstakeRequested(msg.sender, unlockAt);
    }

    /// @notice Pays the whole stake back once the unstake delay has passed.
    function withdraw() external nonReentrant {
        Node storage n = _nodes[msg.sender];
        if (n.slashed) revert NodeIsSlashed(msg.sender);
        if (n.unlockAt == 0) revert UnstakeNotRequested(msg.sender);
        if (block.timestamp < n.unlockAt) revert UnstakeLocked(msg.sender, n.unlockAt);
        uint256 amount = n.stake;
        n.stake = 0;
        n.unlockAt = 0;
        n.leftAt = uint48(block.timestamp);
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // --- coordinator --------------------------------------------------------------------------------

    /// @notice Removes a node from the network and returns its stake (not a punishment).
    function kickOut(address node) external onlyRole(COORDINATOR_ROLE) nonReentrant {
        Node storage n = _nodes[node];
        if (n.slashed) revert NodeIsSlashed(node);
        uint256 amount = n.stake;
        if (amount == 0) revert NoStake(node);
        _setActive(n, false);
        n.stake = 0;
        n.unlockAt = 0;
        n.leftAt = uint48(block.timestamp);
        stats.addKickOut();
        emit KickedOut(node, amount);
        _send(node, amount);
    }

    /// @notice Takes the whole stake of results[2].node, on evidence verified here. Callable by the
    /// coordinator or by the TaskLedger (which forwards the slashes of `settle`).
    function slash(SlashEvidence calldata e) external nonReentrant returns (uint256 amount) {
        if (msg.sender != ledger && !hasRole(COORDINATOR_ROLE, msg.sender)) revert NotCoordinator(msg.sender);
        address node = _verify(e);
        Node storage n = _nodes[node];
        amount = n.stake;
        _setActive(n, false);
        n.stake = 0;
        n.slashed = true;
        treasuryBalance += amount;
        stats.addSlash(amount);
        emit Slashed(node, e.taskId, e.kind, amount);
    }

    function sweepTreasury() external nonReentrant {
        uint256 amount = treasuryBalance;
        treasuryBalance = 0;
        emit TreasurySwept(treasury, amount);
        _send(treasury, amount);
    }

    // --- admin --------------------------------------------------------------------------------------

    /// @notice Sets the TaskLedger whose EIP-712 domain signs results. Once only: the domain must not move.
    function setLedger(address ledger_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (ledger != address(0)) revert LedgerAlreadySet(ledger);
        ledger = ledger_;
        emit LedgerSet(ledger_);
    }

    function setMinStake(uint256 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        minStake = value;
        emit SettingChanged("minStake", value);
    }

    function setUnstakeDelay(uint256 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        unstakeDelay = value;
        emit SettingChanged("unstakeDelay", value);
    }

    function setPhashThreshold(uint256 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (value == 0 || value > 64) revert InvalidSetting("phashThreshold", value);
        phashThreshold = value;
        emit SettingChanged("phashThreshold", value);
    }

    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        treasury = treasury_;
        emit TreasuryChanged(treasury_);
    }

    // --- views --------------------------------------------------------------------------------------

    /// @notice Whether TaskLedger may pay `node`: never slashed, and staked now or within the last unstake
    /// delay (a node kicked out or gone keeps its pay for work that settles after it left; a key that never
    /// staked gets nothing).
    function isPayable(address node) external view returns (bool) {
        Node storage n = _nodes[node];
        if (n.slashed) return false;
        return n.stake != 0 || (n.leftAt != 0 && block.timestamp <= uint256(n.leftAt) + unstakeDelay);
    }

    function stakeOf(address node) external view returns (uint256) {
        return _nodes[node].stake;
    }

    function nodeInfo(address node) external view returns (Node memory) {
        return _nodes[node];
    }

    /// @notice Hamming distance of two 64-bit pHashes.
    function hamming(uint64 a, uint64 b) public pure returns (uint256) {
        return PHash.hamming(a, b);
    }

    // --- internals ----------------------------------------------------------------------------------

    function _verify(SlashEvidence calldata e) internal view returns (address) {
        if (e.results.length != 3) revert NoEvidence(e.taskId, e.results.length);
        if (e.kind > KIND_SD) revert UnknownKind(e.kind);
        EvidenceResult calldata a = e.results[0];
        EvidenceResult calldata b = e.results[1];
        EvidenceResult calldata c = e.results[2];
        if (a.node == b.node || a.node == c.node || b.node == c.node) revert DuplicateNode(c.node);
        Node storage victim = _nodes[c.node];
        if (victim.slashed) revert NodeIsSlashed(c.node);
        if (victim.stake == 0) revert NoStake(c.node);
        _requireStaked(a.node);
        _requireStaked(b.node);
        bytes32 ds = IHeliumDomain(ledger).domainSeparator();
        bytes32 ha = _checkResult(ds, e.taskId, e.kind, a);
        bytes32 hb = _checkResult(ds, e.taskId, e.kind, b);
        bytes32 hc = _checkResult(ds, e.taskId, e.kind, c);
        if (e.kind == KIND_GPT) {
            if (ha != hb) revert MajorityDisagrees(e.taskId);
            if (hc == ha) revert SlashedNodeAgrees(e.taskId, c.node);
        } else {
            if (!_sdMatch(a, b)) revert MajorityDisagrees(e.taskId);
            if (_sdMatch(a, c) || _sdMatch(b, c)) revert SlashedNodeAgrees(e.taskId, c.node);
        }
        return c.node;
    }

    function _requireStaked(address node) internal view {
        Node storage n = _nodes[node];
        if (n.stake == 0 || n.slashed) revert NotStaked(node);
    }

    function _checkResult(bytes32 ds, bytes32 taskId, uint8 kind, EvidenceResult calldata r)
        internal
        pure
        returns (bytes32 h)
    {
        if (kind == KIND_SD && r.phashes.length != 0) {
            h = PHash.hash(r.phashes);
        } else {
            if (r.phashes.length != 0) revert BadPhashes(r.node);
            if (kind == KIND_SD && r.resultHash != INVALID_ARGS_HASH) revert BadPhashes(r.node);
            h = r.resultHash;
        }
        bytes32 digest = MessageHashUtils.toTypedDataHash(ds, keccak256(abi.encode(RESULT_TYPEHASH, taskId, h, r.node)));
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, r.r, r.vs);
        if (err != ECDSA.RecoverError.NoError || signer != r.node) revert BadResultSignature(taskId, r.node);
    }

    /// @dev SD results match when both are the invalid-args verdict, or when they carry the same number
    /// of images and every image's pHash is within the threshold (distance < phashThreshold).
    function _sdMatch(EvidenceResult calldata x, EvidenceResult calldata y) internal view returns (bool) {
        if (x.phashes.length == 0 || y.phashes.length == 0) return x.phashes.length == y.phashes.length;
        return PHash.within(x.phashes, y.phashes, phashThreshold);
    }

    function _setActive(Node storage n, bool active) internal {
        if (n.active == active) return;
        n.active = active;
        int256 one = active ? int256(1) : int256(-1);
        stats.addNodes(one, one); // one GPU per node
    }

    function _send(address to, uint256 amount) internal {
        if (amount == 0) return;
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
