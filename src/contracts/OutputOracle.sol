// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IProofVerifier, IMockReporting} from "./IProofVerifier.sol";
import {DevChains} from "./DevChains.sol";

/// @title OutputOracle
/// @notice Stores L2 output roots proposed with a validity proof. The read side is the read side
///         of OP's L2OutputOracle (`latestBlockNumber`, `latestOutputIndex`, `getL2Output`,
///         `getL2OutputIndexAfter`, `nextBlockNumber`, `SUBMISSION_INTERVAL`, `L2_BLOCK_TIME`,
///         `OutputProposed`), so tools written for it read this contract unchanged.
///
///         Output index 0 is the anchor set at deployment; every later output continues from the
///         one before it. The proof's public inputs are built here, from this contract's own
///         storage (previous root and block) and the proposal's arguments; nothing the proposer
///         sends besides the new root, the new block number and the proof is believed.
///
///         Public inputs: twelve bytes32 words, each a 128-bit limb (high half first) of
///             [0,1]   previous output root
///             [2,3]   new output root
///             [4,5]   previous L2 block number
///             [6,7]   new L2 block number
///             [8,9]   program id (verification key id)
///             [10,11] chain config hash
///         Limbs keep every word below the BN254 scalar field modulus, which UltraHonk verifiers
///         require of each public input; a raw keccak root would exceed it most of the time.
contract OutputOracle {
    /// @notice One stored output, laid out exactly as OP's `Types.OutputProposal`.
    struct OutputProposal {
        bytes32 outputRoot;
        /// L1 timestamp of the block that stored it.
        uint128 timestamp;
        uint128 l2BlockNumber;
    }

    /// @notice Number of words `computePublicInputs` returns.
    uint256 public constant PUBLIC_INPUTS_LENGTH = 12;

    /// @notice Minimum number of L2 blocks between two consecutive outputs.
    uint256 public immutable SUBMISSION_INTERVAL;
    /// @notice L2 block time in seconds (read by OP tooling to estimate the next output's time).
    uint256 public immutable L2_BLOCK_TIME;
    /// @notice The only address allowed to propose.
    address public immutable PROPOSER;
    /// @notice The proof verifier.
    IProofVerifier public immutable VERIFIER;
    /// @notice Program / verification-key id the proofs must be made for.
    bytes32 public immutable PROGRAM_ID;
    /// @notice Hash of the L2 chain configuration the proofs must be made for.
    bytes32 public immutable CHAIN_CONFIG_HASH;
    /// @notice L2 block number of the anchor output (index 0).
    uint256 public immutable startingBlockNumber;

    OutputProposal[] internal l2Outputs;

    /// @notice Emitted for every accepted proposal (not for the anchor). Same signature as OP's.
    event OutputProposed(
        bytes32 indexed outputRoot, uint256 indexed l2OutputIndex, uint256 indexed l2BlockNumber, uint256 l1Timestamp
    );

    /// @notice The caller is not the configured proposer.
    error NotProposer(address caller);
    /// @notice The proposed L2 block is closer than SUBMISSION_INTERVAL to the latest output (or below it).
    error L2BlockNumberTooLow(uint256 l2BlockNumber, uint256 minimum);
    /// @notice An L2 block number does not fit the uint128 of an OutputProposal.
    error L2BlockNumberOverflow(uint256 l2BlockNumber);
    /// @notice The zero hash is not an output root.
    error EmptyOutputRoot();
    /// @notice The verifier returned false.
    error InvalidProof();
    /// @notice The verifier reports itself as a mock and this chain is not a dev chain.
    error MockVerifierOnNonDevChain(address verifier, uint256 chainId);
    /// @notice The verifier address holds no code.
    error VerifierNotContract(address verifier);
    /// @notice Constructor argument checks.
    error ZeroSubmissionInterval();
    error ZeroL2BlockTime();
    error ZeroProposer();
    /// @notice `getL2Output` was asked for an index that is not stored.
    error OutputIndexOutOfRange(uint256 index, uint256 length);
    /// @notice `getL2OutputIndexAfter` was asked for a block above the latest output.
    error NoOutputAtOrAfter(uint256 l2BlockNumber);

    /// @param _anchorOutputRoot Output root of the starting L2 block (output index 0).
    /// @param _anchorL2BlockNumber The starting L2 block.
    /// @param _submissionInterval Minimum L2 blocks between outputs (> 0).
    /// @param _l2BlockTime L2 block time in seconds (> 0); informational, for OP tooling.
    /// @param _verifier The proof verifier; a verifier reporting `isMock()` is refused off dev chains.
    /// @param _programId Program / verification-key id bound into every proof.
    /// @param _chainConfigHash L2 chain configuration hash bound into every proof.
    /// @param _proposer The only address allowed to call `proposeL2Output`.
    constructor(
        bytes32 _anchorOutputRoot,
        uint256 _anchorL2BlockNumber,
        uint256 _submissionInterval,
        uint256 _l2BlockTime,
        address _verifier,
        bytes32 _programId,
        bytes32 _chainConfigHash,
        address _proposer
    ) {
        if (_submissionInterval == 0) revert ZeroSubmissionInterval();
        if (_l2BlockTime == 0) revert ZeroL2BlockTime();
        if (_proposer == address(0)) revert ZeroProposer();
        if (_anchorOutputRoot == bytes32(0)) revert EmptyOutputRoot();
        if (_anchorL2BlockNumber > type(uint128).max) revert L2BlockNumberOverflow(_anchorL2BlockNumber);
        // Keeps `latest + SUBMISSION_INTERVAL` far from overflow.
        if (_submissionInterval > type(uint128).max) revert L2BlockNumberOverflow(_submissionInterval);
        if (_verifier.code.length == 0) revert VerifierNotContract(_verifier);
        _requireAllowedVerifier(_verifier);

        SUBMISSION_INTERVAL = _submissionInterval;
        L2_BLOCK_TIME = _l2BlockTime;
        PROPOSER = _proposer;
        VERIFIER = IProofVerifier(_verifier);
        PROGRAM_ID = _programId;
        CHAIN_CONFIG_HASH = _chainConfigHash;
        startingBlockNumber = _anchorL2BlockNumber;
        l2Outputs.push(
            OutputProposal({
                outputRoot: _anchorOutputRoot,
                timestamp: uint128(block.timestamp),
                l2BlockNumber: uint128(_anchorL2BlockNumber)
            })
        );
    }

    /// @notice Stores `outputRoot` for `l2BlockNumber` if `proof` proves the transition from the
    ///         latest stored output to it. Reverts with a named error otherwise; a verifier that
    ///         reverts has its revert data passed through.
    function proposeL2Output(bytes32 outputRoot, uint256 l2BlockNumber, bytes calldata proof) external {
        if (msg.sender != PROPOSER) revert NotProposer(msg.sender);
        if (outputRoot == bytes32(0)) revert EmptyOutputRoot();

        uint256 index = l2Outputs.length;
        OutputProposal storage latest = l2Outputs[index - 1];
        uint256 previousBlock = latest.l2BlockNumber;
        uint256 minimum = previousBlock + SUBMISSION_INTERVAL;
        if (l2BlockNumber < minimum) revert L2BlockNumberTooLow(l2BlockNumber, minimum);
        if (l2BlockNumber > type(uint128).max) revert L2BlockNumberOverflow(l2BlockNumber);

        _requireAllowedVerifier(address(VERIFIER));
        bytes32[] memory inputs = computePublicInputs(latest.outputRoot, outputRoot, previousBlock, l2BlockNumber);
        if (!VERIFIER.verify(proof, inputs)) revert InvalidProof();

        l2Outputs.push(
            OutputProposal({
                outputRoot: outputRoot,
                timestamp: uint128(block.timestamp),
                l2BlockNumber: uint128(l2BlockNumber)
            })
        );
        emit OutputProposed(outputRoot, index, l2BlockNumber, block.timestamp);
    }

    /// @notice The public inputs a proof of the transition (previous → new) must have, in the
    ///         layout documented on the contract. Off-chain provers can call this to check theirs.
    function computePublicInputs(
        bytes32 previousOutputRoot,
        bytes32 newOutputRoot,
        uint256 previousL2BlockNumber,
        uint256 newL2BlockNumber
    ) public view returns (bytes32[] memory inputs) {
        inputs = new bytes32[](PUBLIC_INPUTS_LENGTH);
        _limbs(inputs, 0, uint256(previousOutputRoot));
        _limbs(inputs, 2, uint256(newOutputRoot));
        _limbs(inputs, 4, previousL2BlockNumber);
        _limbs(inputs, 6, newL2BlockNumber);
        _limbs(inputs, 8, uint256(PROGRAM_ID));
        _limbs(inputs, 10, uint256(CHAIN_CONFIG_HASH));
    }

    /// @notice The output at `l2OutputIndex` (0 is the anchor).
    function getL2Output(uint256 l2OutputIndex) external view returns (OutputProposal memory) {
        if (l2OutputIndex >= l2Outputs.length) revert OutputIndexOutOfRange(l2OutputIndex, l2Outputs.length);
        return l2Outputs[l2OutputIndex];
    }

    /// @notice Index of the first output whose L2 block is >= `l2BlockNumber`.
    function getL2OutputIndexAfter(uint256 l2BlockNumber) public view returns (uint256) {
        uint256 hi = l2Outputs.length - 1;
        if (l2Outputs[hi].l2BlockNumber < l2BlockNumber) revert NoOutputAtOrAfter(l2BlockNumber);
        uint256 lo = 0;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            if (l2Outputs[mid].l2BlockNumber < l2BlockNumber) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }

    /// @notice The first output whose L2 block is >= `l2BlockNumber`.
    function getL2OutputAfter(uint256 l2BlockNumber) external view returns (OutputProposal memory) {
        return l2Outputs[getL2OutputIndexAfter(l2BlockNumber)];
    }

    /// @notice Index of the latest output (0 while only the anchor is stored).
    function latestOutputIndex() external view returns (uint256) {
        return l2Outputs.length - 1;
    }

    /// @notice Index the next accepted output will get.
    function nextOutputIndex() external view returns (uint256) {
        return l2Outputs.length;
    }

    /// @notice L2 block of the latest output (the anchor block while no proposal was accepted).
    function latestBlockNumber() public view returns (uint256) {
        return l2Outputs[l2Outputs.length - 1].l2BlockNumber;
    }

    /// @notice The lowest L2 block the next proposal may be for.
    function nextBlockNumber() external view returns (uint256) {
        return latestBlockNumber() + SUBMISSION_INTERVAL;
    }

    /// @notice Lowercase aliases, as OP's L2OutputOracle has them.
    function submissionInterval() external view returns (uint256) {
        return SUBMISSION_INTERVAL;
    }

    function l2BlockTime() external view returns (uint256) {
        return L2_BLOCK_TIME;
    }

    function proposer() external view returns (address) {
        return PROPOSER;
    }

    function verifier() external view returns (address) {
        return address(VERIFIER);
    }

    function programId() external view returns (bytes32) {
        return PROGRAM_ID;
    }

    function chainConfigHash() external view returns (bytes32) {
        return CHAIN_CONFIG_HASH;
    }

    /// @notice Whether `chainId` is one of the dev chain ids (31337, 900, 901, 1337).
    function isDevChain(uint256 chainId) external pure returns (bool) {
        return DevChains.isDevChain(chainId);
    }

    function _limbs(bytes32[] memory out, uint256 offset, uint256 word) private pure {
        out[offset] = bytes32(word >> 128);
        out[offset + 1] = bytes32(word & type(uint128).max);
    }

    /// @dev A mock verifier is allowed on dev chains only. Checked at deployment and again on every
    ///      proposal: a chain id can change under a contract (a fork), and a verifier behind a proxy
    ///      can change what it is.
    function _requireAllowedVerifier(address v) private view {
        if (DevChains.isDevChain(block.chainid)) return;
        if (_reportsMock(v)) revert MockVerifierOnNonDevChain(v, block.chainid);
    }

    /// @dev True iff `v.isMock()` succeeds and returns a non-zero word. A verifier without the
    ///      function (reverts, or returns nothing) is not a mock.
    function _reportsMock(address v) private view returns (bool) {
        (bool ok, bytes memory ret) = v.staticcall{gas: 50_000}(abi.encodeCall(IMockReporting.isMock, ()));
        return ok && ret.length >= 32 && abi.decode(ret, (uint256)) != 0;
    }
}
